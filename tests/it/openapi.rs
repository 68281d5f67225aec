//! `/openapi.json`: the HTTP API's description, served without
//! credentials, naming every route; and schemathesis fuzzing every
//! operation from it: no 5xx, responses as described.

use crate::support::{TestServer, hs_server, python};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Every operation the server answers, as `METHOD path`.
const OPERATIONS: &[&str] = &[
    "GET /",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "POST /v1/events",
    "POST /v1/sql",
    "POST /v1/query",
    "GET /v1/streams/{table}/{entity}",
    "GET /v1/stream",
    "GET /v1/subscriptions",
    "POST /v1/subscriptions",
    "GET /v1/subscriptions/{name}",
    "DELETE /v1/subscriptions/{name}",
    "POST /v1/subscriptions/{name}/reset",
    "GET /v1/subscriptions/{name}/consume",
    "GET /v1/projections",
    "POST /v1/projections",
    "GET /v1/projections/{name}",
    "DELETE /v1/projections/{name}",
    "GET /v1/projections/{name}/state",
    "POST /v1/projections/{name}/rebuild",
    "POST /v1/projections/{name}/promote",
    "GET /v1/pipelines",
    "POST /v1/pipelines",
    "GET /v1/pipelines/{name}",
    "DELETE /v1/pipelines/{name}",
    "POST /v1/pipelines/{name}/pause",
    "POST /v1/pipelines/{name}/resume",
    "GET /v1/replay",
    "POST /v1/replay",
    "GET /v1/schemas",
    "GET /v1/schemas/{table}",
    "PUT /v1/schemas/{table}",
    "GET /v1/schemas/{table}/{event_type}",
    "POST /v1/schemas/{table}/{event_type}",
    "DELETE /v1/schemas/{table}/{event_type}/versions/{version}",
    "POST /v1/validate",
    "GET /v1/policies",
    "POST /v1/policies",
    "GET /v1/policies/{name}",
    "PUT /v1/policies/{name}",
    "DELETE /v1/policies/{name}",
    "POST /v1/policies/defaults",
    "POST /v1/policies/evaluate",
    "POST /v1/admin/compact",
    "POST /v1/admin/backup",
    "GET /v1/admin/tables/{table}/settings",
    "PUT /v1/admin/tables/{table}/settings",
];

#[test]
fn the_description_is_public_and_names_every_route() {
    let s = hs_server();
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut described = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            described.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(described, expected);
    // Every operation lists the shared error shape, and the routes that
    // need a token still refuse a request without one.
    let sql = &doc["paths"]["/v1/sql"]["post"];
    assert_eq!(
        sql["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Error"
    );
    assert!(sql["responses"]["200"]["content"]["application/vnd.apache.arrow.stream"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(s.post("/v1/sql", "text/plain", "SELECT 1").status, 401);
    // A refusal by axum's own extractors has the same JSON shape.
    let r = s.delete("/v1/policies/p?generation=x");
    assert_eq!(r.status, 401, "credentials come before parameters");
    let r = TestServer::start(&[]).delete("/v1/policies/p?generation=x");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("generation"),
        "{}",
        r.text()
    );
}

/// The schemathesis command beside the test's Python.
fn schemathesis() -> PathBuf {
    let python = PathBuf::from(python());
    match python.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("schemathesis"),
        _ => PathBuf::from("schemathesis"),
    }
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_the_description() {
    let s = TestServer::start(&[]);
    s.ingest(&crate::support::events("view", 50));
    let report = tempfile::tempdir().unwrap();
    // Every check but positive_data_acceptance: no schema can say which
    // SQL text, DSL document or pipeline is valid, and refusing an invalid
    // one with a 400 is right. `/v1/stream` is excluded: without a
    // WebSocket it is an endless NDJSON stream (tests/it/live.rs covers it).
    let out = Command::new(schemathesis())
        .current_dir(report.path())
        .args(["run", &s.url("/openapi.json")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "20261130",
            "--workers",
            "1",
        ])
        .args(["--exclude-path", "/v1/stream", "--request-timeout", "30"])
        .args(["--no-color"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", schemathesis().display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
