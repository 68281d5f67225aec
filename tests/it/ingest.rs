//! Ingest through HTTP: every input form, every refusal.

use crate::support::{TestServer, events, wait_until};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_input_form_is_accepted() {
    let s = TestServer::start(&[]);
    // one object
    let r = s.ingest(&json!({"event_type": "a", "entity_id": "u1"}));
    assert_eq!(r["accepted"], 1);
    // an array
    assert_eq!(s.ingest(&events("b", 3))["accepted"], 3);
    // NDJSON, with a blank line and CRLF
    let nd = "{\"event_type\":\"c\",\"entity_id\":\"u1\"}\r\n\n{\"event_type\":\"c\",\"entity_id\":\"u2\",\"timestamp\":1767225600000}\n";
    let r = s.post("/v1/events", "application/x-ndjson", nd);
    assert_eq!(
        (r.status, r.json()["accepted"].clone()),
        (200, json!(2)),
        "{}",
        r.text()
    );
    // gzip
    let body = gzip(events("d", 4).to_string().as_bytes());
    let r = s.post_with(
        "/v1/events",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // zstd
    let body = zstd::encode_all(events("e", 5).to_string().as_bytes(), 3).unwrap();
    let r = s.post_with(
        "/v1/events",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "zstd"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // another table
    let r = s.post(
        "/v1/events?table=clicks",
        "application/json",
        events("f", 2).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let rows = s.sql("SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY 1");
    assert_eq!(
        rows,
        vec![
            json!({"event_type": "a", "n": 1}),
            json!({"event_type": "b", "n": 3}),
            json!({"event_type": "c", "n": 2}),
            json!({"event_type": "d", "n": 4}),
            json!({"event_type": "e", "n": 5}),
        ]
    );
    assert_eq!(s.scalar("SELECT count(*) FROM clicks"), json!(2));
    // RFC 3339 and epoch-millisecond timestamps land on their UTC day
    let rows = s.sql("SELECT CAST(event_date AS VARCHAR) AS d FROM events WHERE event_type = 'c' AND entity_id = 'u2'");
    assert_eq!(rows, vec![json!({"d": "2026-01-01"})]);
    // server time and generated UUIDv7 ids when absent
    let rows = s.sql("SELECT event_id, timestamp FROM events WHERE event_type = 'a'");
    let id = rows[0]["event_id"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "7", "not a UUIDv7: {id}");
}

#[test]
fn bad_requests_are_refused_and_store_nothing() {
    let s = TestServer::start(&["--max-body-bytes", "2000"]);
    // (path, headers, body, expected status, expected message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            br#"[{"event_type":"a","entity_id":"u1"},{"event_type":"a"}]"#.to_vec(),
            400,
            "event 1: field \"entity_id\" is required",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/x-ndjson")],
            b"{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n{\"event_type\":\"a\",\"entity_id\":7}\n".to_vec(),
            400,
            "event 1 (line 2): field \"entity_id\" must be a string",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/x-ndjson")],
            b"{\"event_type\":\"a\",\"entity_id\":\"u1\"}\n{\"event_type\":\n".to_vec(),
            400,
            "invalid JSON at line 2",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            br#"{"event_type":"a","entity_id":"u1","timestamp":"last tuesday"}"#.to_vec(),
            400,
            "is not an RFC 3339 time",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            br#"{"event_type":"a","entity_id":"u1","payload":[1]}"#.to_vec(),
            400,
            "field \"payload\" must be a JSON object",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            br#"{"event_type":"a","entity_id":"u1","amount":1}"#.to_vec(),
            400,
            "unknown field \"amount\"",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            br#"{"event_type":"a","entity_id":"u1","timestamp":1767225600000000}"#.to_vec(),
            400,
            "outside the accepted range",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            b"[]".to_vec(),
            400,
            "no events",
        ),
        (
            "/v1/events?table=Bad-Name",
            vec![("content-type", "application/json")],
            br#"{"event_type":"a","entity_id":"u1"}"#.to_vec(),
            400,
            "invalid table name",
        ),
        (
            "/v1/events",
            vec![("content-type", "text/plain")],
            br#"{"event_type":"a","entity_id":"u1"}"#.to_vec(),
            415,
            "unsupported Content-Type",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json"), ("content-encoding", "br")],
            br#"{"event_type":"a","entity_id":"u1"}"#.to_vec(),
            415,
            "unsupported Content-Encoding",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json"), ("content-encoding", "gzip")],
            b"not gzip at all".to_vec(),
            400,
            "invalid gzip body",
        ),
        (
            "/v1/events",
            vec![("content-type", "application/json")],
            events("big", 100).to_string().into_bytes(),
            413,
            "too large",
        ),
        (
            // small on the wire, too large once decompressed
            "/v1/events",
            vec![("content-type", "application/json"), ("content-encoding", "gzip")],
            gzip(&vec![b' '; 1_000_000]),
            413,
            "after decompression",
        ),
    ];
    for (path, headers, body, status, message) in cases {
        let r = s.post_with(path, &headers, body);
        assert_eq!(r.status, status, "{path} {headers:?}: {}", r.text());
        let err = r.error();
        assert!(err.contains(message), "expected {message:?} in {err:?}");
    }
    // Nothing of any refused request was stored: no table even exists.
    let r = s.post("/v1/sql", "text/plain", "SELECT count(*) FROM events");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("events"), "{}", r.error());
}

#[test]
fn payload_fields_become_typed_columns() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([
        {"event_type": "purchase", "entity_id": "u1", "payload": {"amount": 10, "sku": "A"}},
        {"event_type": "purchase", "entity_id": "u2", "payload": {"amount": 2.5, "gift": true}},
        {"event_type": "view", "entity_id": "u1", "payload": {"page": "/home"}},
    ]));
    assert_eq!(
        s.scalar("SELECT sum(amount) FROM events WHERE event_type = 'purchase'"),
        json!(12.5)
    );
    // a new field in a later request widens the table
    s.ingest(&json!({"event_type": "purchase", "entity_id": "u3",
        "payload": {"amount": 1, "coupon": "X1", "address": {"city": "Oslo", "zip": "0150"}, "tags": ["a", "b"]}}));
    let rows = s.sql("SELECT entity_id, coupon, gift FROM events WHERE event_type = 'purchase' ORDER BY entity_id");
    assert_eq!(
        rows,
        vec![
            json!({"entity_id": "u1", "coupon": null, "gift": null}),
            json!({"entity_id": "u2", "coupon": null, "gift": true}),
            json!({"entity_id": "u3", "coupon": "X1", "gift": null}),
        ]
    );
    // nested values are JSON text, queryable with the json functions
    assert_eq!(
        s.scalar("SELECT json_get_str(address, 'city') FROM events WHERE entity_id = 'u3'"),
        json!("Oslo")
    );
    assert_eq!(
        s.scalar("SELECT json_length(tags) FROM events WHERE entity_id = 'u3'"),
        json!(2)
    );
    // a conflicting type is kept in _overflow, never dropped or coerced
    s.ingest(&json!([
        {"event_type": "purchase", "entity_id": "u4", "payload": {"amount": "a lot", "event_type": "spoof", "Sku": "B"}},
    ]));
    let row = &s.sql("SELECT amount, sku, _overflow FROM events WHERE entity_id = 'u4'")[0];
    assert_eq!(row["amount"], json!(null));
    let overflow: serde_json::Value =
        serde_json::from_str(row["_overflow"].as_str().unwrap()).unwrap();
    assert_eq!(
        overflow,
        json!({"amount": "a lot", "event_type": "spoof", "Sku": "B"})
    );
    assert_eq!(
        s.scalar("SELECT json_get_str(_overflow, 'amount') FROM events WHERE entity_id = 'u4'"),
        json!("a lot")
    );
    // and all of it survives a flush into Delta
    let mut s = s;
    s.stop();
    s.restart();
    assert_eq!(s.scalar("SELECT sum(amount) FROM events"), json!(13.5));
    assert_eq!(
        s.scalar("SELECT json_get_str(_overflow, 'amount') FROM events WHERE entity_id = 'u4'"),
        json!("a lot")
    );
}

#[test]
fn retried_event_ids_are_stored_once() {
    let mut s = TestServer::start(&["--flush-age", "100ms"]);
    let batch = json!([
        {"event_id": "e1", "event_type": "a", "entity_id": "u1"},
        {"event_id": "e2", "event_type": "a", "entity_id": "u1"},
        {"event_id": "e2", "event_type": "a", "entity_id": "u1"},
    ]);
    let r = s.ingest(&batch);
    assert_eq!(
        (r["accepted"].clone(), r["duplicates"].clone()),
        (json!(2), json!(1))
    );
    // the retry after a lost reply
    let r = s.ingest(&batch);
    assert_eq!(
        (r["accepted"].clone(), r["duplicates"].clone()),
        (json!(0), json!(3))
    );
    // after the events were flushed, and after a crash and restart
    wait_until("the events are flushed", Duration::from_secs(30), || {
        s.scalar("SELECT buffered_rows FROM system.tables WHERE table_name = 'events'") == json!(0)
    });
    s.kill9();
    s.restart();
    let r = s.ingest(&batch);
    assert_eq!(r["accepted"], json!(0));
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(2));
}

#[test]
fn a_full_buffer_answers_503_with_retry_after() {
    let s = TestServer::start(&["--max-buffer-bytes", "1", "--flush-age", "1h"]);
    // Once the flusher has drained the server's own start-up record (the
    // audit log), a request finds the buffer empty; after it the buffer is
    // over its limit until the flusher drains it again.
    wait_until("the buffer has drained", Duration::from_secs(30), || {
        s.post(
            "/v1/events",
            "application/json",
            events("a", 10).to_string(),
        )
        .status
            == 200
    });
    let mut saw_503 = false;
    for _ in 0..5 {
        let r = s.post(
            "/v1/events",
            "application/json",
            events("b", 10).to_string(),
        );
        if r.status == 503 {
            assert_eq!(r.headers.get("retry-after").unwrap(), "1");
            assert!(r.error().contains("buffer is full"), "{}", r.error());
            saw_503 = true;
            break;
        }
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(saw_503, "never refused while over the buffer limit");
    // The flusher drains the buffer and ingest recovers.
    wait_until("ingest recovers", Duration::from_secs(30), || {
        s.post("/v1/events", "application/json", events("c", 1).to_string())
            .status
            == 200
    });
}

#[test]
fn requests_that_would_explode_are_refused() {
    let s = TestServer::start(&[]);
    // one event per day for more days than one request may span
    let evs: Vec<serde_json::Value> = (0..4100i64)
        .map(|d| json!({"event_type": "a", "entity_id": "u", "timestamp": 1_000_000_000_000i64 + d * 86_400_000}))
        .collect();
    let r = s.post(
        "/v1/events",
        "application/json",
        serde_json::Value::Array(evs).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("different days"), "{}", r.error());
    // a sparse payload: 2000 distinct keys in one event, 60000 events
    let mut body = String::new();
    let keys: serde_json::Map<String, serde_json::Value> =
        (0..2000).map(|k| (format!("k{k}"), json!(1))).collect();
    body.push_str(&json!({"event_type": "a", "entity_id": "u", "payload": keys}).to_string());
    body.push('\n');
    for _ in 0..60_000 {
        body.push_str("{\"event_type\":\"a\",\"entity_id\":\"u\"}\n");
    }
    let r = s.post("/v1/events", "application/x-ndjson", body);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.error().contains("send fewer events per request"),
        "{}",
        r.error()
    );
    let r = s.post("/v1/sql", "text/plain", "SELECT count(*) FROM events");
    assert!(
        r.status == 400 || r.json()[0]["count(*)"] == json!(0),
        "{}",
        r.text()
    );
}

#[test]
fn flags_can_be_set_by_environment_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let s = TestServer::start_in_with_env(tmp.path(), &[], &[("ALLSOURCE_MAX_BODY_BYTES", "100")]);
    let r = s.post(
        "/v1/events",
        "application/json",
        events("a", 10).to_string(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn numbers_are_stored_exactly_as_sent() {
    // Each of these decimal texts names one f64 that a fast, inexact
    // parser misses by one unit in the last place. The check reads the
    // stored values back as text and parses them with Rust's exact parser.
    let texts = [
        "7.55386154821378e+149",
        "-4.1027240969194725e+225",
        "5.0856560786263834e-244",
        "-7.222243987594314e+151",
    ];
    let mut s = TestServer::start(&[]);
    let body: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"event_type":"m","entity_id":"e{i}","payload":{{"x":{t},"nested":{{"v":{t}}}}}}}"#
            )
        })
        .collect();
    let r = s.post("/v1/events", "application/x-ndjson", body.join("\n"));
    assert_eq!(r.status, 200, "{}", r.text());
    let check = |s: &TestServer| {
        let rows = s.sql(
            "SELECT entity_id, CAST(x AS VARCHAR) AS x, nested FROM events ORDER BY entity_id",
        );
        for (row, text) in rows.iter().zip(texts) {
            let sent: f64 = text.parse().unwrap();
            let column: f64 = row["x"].as_str().unwrap().parse().unwrap();
            assert_eq!(column.to_bits(), sent.to_bits(), "column x of {row}");
            let nested = row["nested"].as_str().unwrap();
            let inner = nested
                .strip_prefix(r#"{"v":"#)
                .and_then(|v| v.strip_suffix('}'))
                .unwrap_or_else(|| panic!("nested is {nested}"));
            let kept: f64 = inner.parse().unwrap();
            assert_eq!(kept.to_bits(), sent.to_bits(), "nested of {row}");
        }
    };
    check(&s);
    s.stop(); // and as written to Parquet
    s.restart();
    check(&s);
}
