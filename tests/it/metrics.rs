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
    // 12 events, and the audit log's record of the server's start.
    assert_eq!(value(&text, "allsource_buffer_rows"), 13.0);
    assert!(value(&text, "allsource_buffer_bytes") > 0.0);
    // No query is running while /metrics answers.
    assert_eq!(value(&text, "allsource_query_memory_bytes"), 0.0);
    // Requests are timed by route template and outcome.
    assert_eq!(
        value(
            &text,
            r#"allsource_http_request_seconds_count{outcome="ok",route="/v1/events"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"allsource_http_request_seconds_count{outcome="rejected",route="/v1/sql"}"#
        ),
        1.0
    );
    let r = s.get("/v1/streams/events/u0");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.get("/no/such/route");
    assert_eq!(r.status, 404);
    let text = s.client_get("/metrics");
    assert_eq!(
        value(
            &text,
            r#"allsource_http_request_seconds_count{outcome="ok",route="/v1/streams/{table}/{entity}"}"#
        ),
        1.0
    );

    // a restart flushes; the new process counts its own work
    s.stop();
    s.restart();
    s.ingest(&events("c", 3));
    s.stop();
    s.restart();
    s.ingest(&events("d", 3));
    let text = s.client_get("/metrics");
    // With this start's audit record.
    assert_eq!(value(&text, "allsource_buffer_rows"), 4.0);
    let r = s.post("/v1/admin/compact", "application/json", "");
    assert_eq!(r.status, 200);
    let text = s.client_get("/metrics");
    assert_eq!(
        value(&text, r#"allsource_compactions_total{outcome="done"}"#),
        1.0
    );
    assert!(value(&text, r#"allsource_compaction_files_total{direction="in"}"#) >= 2.0);
}

#[test]
fn every_reply_carries_a_request_id() {
    let s = TestServer::start(&[]);
    let a = s.post("/v1/sql", "text/plain", "SELECT 1");
    let b = s.post("/v1/sql", "text/plain", "SELEC 1");
    let id = |r: &crate::support::Reply| {
        r.headers
            .get("x-request-id")
            .expect("x-request-id header")
            .to_str()
            .unwrap()
            .to_string()
    };
    let (ia, ib) = (id(&a), id(&b));
    assert_eq!(ia.len(), 36, "{ia}");
    assert_ne!(ia, ib, "ids must differ");
    assert_eq!(b.status, 400, "errors carry one too");
    // a client's own id is kept; a silly one is replaced
    let mine = s.post_with("/v1/sql", &[("x-request-id", "trace-42")], "SELECT 1");
    assert_eq!(id(&mine), "trace-42");
    let long = "x".repeat(200);
    let silly = s.post_with("/v1/sql", &[("x-request-id", long.as_str())], "SELECT 1");
    assert_eq!(id(&silly).len(), 36);
}

/// `promtool check metrics` (Prometheus's own linter, Debian package
/// `prometheus`, installed by scripts/test.sh) accepts the output, after
/// every kind of series has samples: ingest, queries, refusals, rate limits.
#[test]
fn promtool_accepts_the_metrics() {
    let s = TestServer::start(&["--rate-limit-queries", "1"]);
    s.ingest(&events("a", 3));
    s.sql("SELECT count(*) FROM events");
    let _ = s.post("/v1/sql", "text/plain", "SELECT 1");
    let _ = s.post("/v1/sql", "text/plain", "SELECT 1");
    let text = s.client_get("/metrics");
    assert!(text.contains("allsource_rate_limited_total"), "{text}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/test.sh installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stand-in OTLP/HTTP collector: answers 200 to every POST and hands the
/// request (head and body) to the test.
fn collector() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 2 {
                        head.push_str(&line);
                        line.clear();
                    }
                    if head.is_empty() {
                        return;
                    }
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    let _ = tx.send((head, body));
                }
            });
        }
    });
    (url, rx)
}

#[test]
fn request_spans_are_exported_over_otlp() {
    let (url, received) = collector();
    let mut s = TestServer::start(&["--otlp-endpoint", &url]);
    let r = s.post_with(
        "/v1/sql",
        &[("x-request-id", "otlp-trace-check-7")],
        "SELECT 1",
    );
    assert_eq!(r.status, 200);
    // Stopping flushes the last batch.
    s.stop();
    let mut exported = Vec::new();
    while let Ok((head, body)) = received.recv_timeout(std::time::Duration::from_secs(10)) {
        assert!(head.starts_with("POST /v1/traces"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("application/x-protobuf"),
            "{head}"
        );
        exported.extend(body);
        if String::from_utf8_lossy(&exported).contains("otlp-trace-check-7") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&exported);
    assert!(
        text.contains("otlp-trace-check-7") && text.contains("allsource"),
        "the request's span was not exported: {text}"
    );
}
