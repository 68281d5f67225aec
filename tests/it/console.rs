//! The web console at `/`, driven in a real headless browser (Debian's
//! chromium through Playwright, `tests/python/console_browser.py`): sign
//! in with a token, browse tables, run SQL and DSL, see the grid, a
//! time-series chart, a funnel chart and an error. Screenshots go to a
//! temporary directory, never into the repository.

use crate::support::{TestServer, hs_server, python, token};
use serde_json::{Value, json};
use std::process::Command;

fn seed(s: &TestServer, writer: &str) {
    let event = |ty: &str, entity: &str, hour: u32, amount: f64| {
        json!({"event_type": ty, "entity_id": entity,
               "timestamp": format!("2026-01-01T{hour:02}:05:00Z"),
               "payload": {"amount": amount}})
    };
    let events = json!([
        event("view", "u1", 0, 1.0),
        event("view", "u2", 1, 1.0),
        event("view", "u3", 2, 1.0),
        event("view", "u4", 3, 1.0),
        event("buy", "u1", 4, 10.0),
        event("buy", "u2", 5, 10.0),
    ]);
    let r = s.post_as(
        "/v1/events",
        writer,
        "application/json",
        &events.to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Runs `tests/python/console_browser.py` against `s` with `token` (none
/// when empty) and `extra` arguments; returns its report of the page.
fn browse(s: &TestServer, token: &str, shots: &std::path::Path, extra: &[&str]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/console_browser.py"
    );
    let out = Command::new(python())
        .arg(script)
        .arg(&s.base)
        .arg(token)
        .arg(shots)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_console_signs_in_queries_and_draws_in_a_browser() {
    let s = hs_server();
    seed(&s, &token("acme", "writer"));
    let page = s.get("/");
    assert_eq!(page.status, 200);
    let policy = page.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'sha256-"), "{policy}");
    assert!(page.text().contains("<title>AllSource console</title>"));

    let shots = tempfile::tempdir().unwrap();
    let report = browse(&s, &token("acme", "reader"), shots.path(), &[]);
    assert_eq!(report["login_asked"], true);
    assert!(
        !report["bad_token_error"].as_str().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "events"),
        "{report}"
    );
    assert!(
        report["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("entity_id")),
        "{report}"
    );
    assert_eq!(
        report["editor_after_click"],
        "SELECT * FROM events LIMIT 100"
    );
    assert_eq!(report["series_rows"], 6, "{report}");
    assert_eq!(report["series_header"], json!(["hour", "n", "amount"]));
    assert_eq!(report["series_lines"], 2, "{report}");
    assert!(
        report["status"].as_str().unwrap().starts_with("6 rows in"),
        "{report}"
    );
    assert_eq!(report["funnel_bars"], 2, "{report}");
    assert_eq!(report["funnel_users"], json!(["4", "2"]), "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("nosuch_column"),
        "{report}"
    );
    assert_eq!(report["history"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["mode_after_history"], "sql");
    assert_eq!(report["problems"], json!([]), "{report}");
    for shot in ["1-login-refused", "3-timeseries", "4-funnel", "5-error"] {
        assert!(shots.path().join(format!("{shot}.png")).exists(), "{shot}");
    }
}

#[test]
fn without_auth_the_console_opens_straight_to_the_tables() {
    let s = TestServer::start(&[]);
    s.ingest(&crate::support::events("view", 3));
    let shots = tempfile::tempdir().unwrap();
    let report = browse(&s, "", shots.path(), &["browse"]);
    assert_eq!(report["login_asked"], false, "{report}");
    assert!(
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "events"),
        "{report}"
    );
    assert_eq!(
        report["editor_after_click"],
        "SELECT * FROM events LIMIT 100"
    );
}
