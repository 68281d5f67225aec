//! `allsource projections` and `allsource pipelines` through the real
//! binary: definitions created from a file, listed as a table and as
//! JSON, shown, a projection's state read by key, a pipeline paused and
//! resumed, both deleted; a refused definition (from standard input)
//! fails the command with the server's message on stderr.

use crate::support::*;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs `allsource <args> --url <server>`, with `stdin` on its standard
/// input.
pub(crate) fn cli(s: &TestServer, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(server_bin())
        .args(args)
        .args(["--url", &s.base])
        .env_remove("ALLSOURCE_TOKEN")
        .env_remove("ALLSOURCE_TENANT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run allsource");
    // A command that fails before reading its input closes the pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Runs a command that must succeed; its standard output.
pub(crate) fn ok(s: &TestServer, args: &[&str]) -> String {
    let out = cli(s, args, "");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; its standard error.
pub(crate) fn refused(s: &TestServer, args: &[&str], stdin: &str) -> String {
    let out = cli(s, args, stdin);
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Whether `text` has `line` as one of its lines (stderr may also carry
/// log lines).
fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

pub(crate) fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The table `list` printed: the header's words, then each row's.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

/// Writes `definition` to a file in the server's data directory.
fn definition_file(s: &TestServer, name: &str, definition: &Value) -> String {
    let path = s.data_dir.join(name);
    std::fs::write(&path, definition.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Waits until `show` says the definition has reached the table's last
/// position.
fn caught_up(s: &TestServer, command: &str, name: &str) {
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until(
        &format!("{command} {name} catches up"),
        Duration::from_secs(60),
        || json_of(&ok(s, &[command, "show", name]))["position"] == highest,
    );
}

/// `n` events of the entities `u0`…`u4` in turn, with `amount` 1…n.
fn orders(n: usize) -> Value {
    Value::Array(
        (1..=n)
            .map(|i| {
                json!({
                    "event_type": if i % 2 == 0 { "order" } else { "view" },
                    "entity_id": format!("u{}", i % 5),
                    "payload": {"amount": i},
                })
            })
            .collect(),
    )
}

#[test]
fn the_projections_command_creates_lists_shows_reads_and_deletes() {
    let s = TestServer::start(&[]);
    s.ingest(&orders(20));
    let query = "SELECT entity_id, count(*) AS events, sum(amount) AS total \
                 FROM events GROUP BY entity_id";
    let file = definition_file(
        &s,
        "totals.json",
        &json!({"name": "totals", "query": query}),
    );
    let created = json_of(&ok(&s, &["projections", "create", "-f", &file]));
    assert_eq!(created["name"], "totals");
    assert_eq!(created["version"], 1);
    caught_up(&s, "projections", "totals");

    // The table: one line a projection under the headers.
    let highest = s.scalar("SELECT max(position) FROM events").to_string();
    let rows = table(&ok(&s, &["projections", "list"]));
    assert_eq!(
        rows,
        [
            vec![
                "NAME", "VERSION", "TABLE", "STATUS", "POSITION", "LAG", "ROWS", "NEXT"
            ],
            vec!["totals", "1", "events", "running", &highest, "0", "5", "-"],
        ]
    );
    // --json is the server's list; show is the server's description.
    let listed = json_of(&ok(&s, &["projections", "list", "--json"]));
    assert_eq!(listed["projections"][0]["name"], "totals");
    assert_eq!(listed["projections"].as_array().unwrap().len(), 1);
    let shown = ok(&s, &["projections", "show", "totals"]);
    assert!(shown.lines().count() > 5, "not indented: {shown}");
    assert_eq!(json_of(&shown), s.get("/v1/projections/totals").json());

    // One key's row, its columns in the query's order, and the position
    // on stderr.
    let out = cli(&s, &["projections", "state", "totals", "--key", "u3"], "");
    assert!(out.status.success());
    let state = String::from_utf8(out.stdout).unwrap();
    let expected = s.sql(&format!("SELECT * FROM ({query}) WHERE entity_id = 'u3'"));
    assert_eq!(json_of(&state), Value::Array(expected));
    let at = |column: &str| state.find(column).unwrap();
    assert!(at("entity_id") < at("events") && at("events") < at("total"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        has_line(&stderr, &format!("as of position {highest}")),
        "{stderr}"
    );
    let all = json_of(&ok(&s, &["projections", "state", "totals"]));
    assert_eq!(all.as_array().unwrap().len(), 5);

    // A promote without a next version is refused; a rebuild is
    // accepted.
    let err = refused(&s, &["projections", "promote", "totals"], "");
    assert!(
        err.contains("404") && err.contains("no next version"),
        "{err}"
    );
    let rebuilding = json_of(&ok(&s, &["projections", "rebuild", "totals"]));
    assert_eq!(rebuilding["name"], "totals");

    // Deleted, it is gone.
    assert_eq!(
        ok(&s, &["projections", "delete", "totals"]).trim(),
        "deleted projection totals"
    );
    let err = refused(&s, &["projections", "show", "totals"], "");
    assert!(err.contains("404"), "{err}");
    assert_eq!(table(&ok(&s, &["projections", "list"])).len(), 1);

    // A definition the server refuses, from standard input: a failing
    // exit and the server's own message.
    let bad = json!({"name": "top", "query": format!("{query} ORDER BY 2 LIMIT 3")}).to_string();
    let err = refused(&s, &["projections", "create", "-f", "-"], &bad);
    let message = s.post("/v1/projections", "application/json", bad.clone());
    assert_eq!(message.status, 400);
    let line = format!(
        "allsource projections: 400 Bad Request: {}",
        message.error()
    );
    assert!(err.contains(&line), "{err}");
    let err = refused(&s, &["projections", "create", "-f", "/no/such/file"], "");
    assert!(err.contains("cannot read /no/such/file"), "{err}");
}

#[test]
fn the_pipelines_command_creates_lists_pauses_resumes_and_deletes() {
    let s = TestServer::start(&[]);
    s.ingest(&orders(10));
    let definition = json!({
        "name": "big_orders",
        "source": {"table": "events"},
        "operators": [{"op": "filter", "where": "event_type = 'order' AND amount > 4"}],
        "sink": {"table": "big_orders"},
    });
    let file = definition_file(&s, "big_orders.json", &definition);
    let created = json_of(&ok(&s, &["pipelines", "create", "-f", &file]));
    assert_eq!(created["name"], "big_orders");
    assert_eq!(created["status"], "running");
    caught_up(&s, "pipelines", "big_orders");

    let rows = table(&ok(&s, &["pipelines", "list"]));
    assert_eq!(
        rows,
        [
            vec![
                "NAME", "VERSION", "SOURCE", "SINK", "STATUS", "POSITION", "LAG", "READ", "WRITTEN"
            ],
            vec![
                "big_orders",
                "1",
                "events",
                "big_orders",
                "running",
                "10",
                "0",
                "10",
                "3"
            ],
        ]
    );
    let listed = json_of(&ok(&s, &["pipelines", "list", "--json"]));
    assert_eq!(listed["pipelines"][0]["events_written"], 3);
    let shown = json_of(&ok(&s, &["pipelines", "show", "big_orders"]));
    assert_eq!(shown["operators"], definition["operators"]);
    assert_eq!(shown["sink"]["table"], "big_orders");

    // Paused, it reads nothing more; resumed, it goes on from there.
    let paused = json_of(&ok(&s, &["pipelines", "pause", "big_orders"]));
    assert_eq!(paused["status"], "paused");
    s.ingest(&orders(10));
    let rows = table(&ok(&s, &["pipelines", "list"]));
    assert_eq!(rows[1][4..], ["paused", "10", "10", "10", "3"]);
    let resumed = json_of(&ok(&s, &["pipelines", "resume", "big_orders"]));
    assert_eq!(resumed["status"], "running");
    caught_up(&s, "pipelines", "big_orders");
    assert_eq!(s.scalar("SELECT count(*) FROM big_orders"), 6);

    assert_eq!(
        ok(&s, &["pipelines", "delete", "big_orders"]).trim(),
        "deleted pipeline big_orders"
    );
    assert_eq!(table(&ok(&s, &["pipelines", "list"])).len(), 1);
    let err = refused(&s, &["pipelines", "pause", "big_orders"], "");
    assert!(err.contains("404") && err.contains("big_orders"), "{err}");

    // A refused definition, from standard input: the operator and the
    // reason, as the server gives them.
    let mut bad = definition.clone();
    bad["operators"] = json!([{"op": "map", "fields": {"x": "no_such_field + 1"}}]);
    let bad = bad.to_string();
    let err = refused(&s, &["pipelines", "create", "-f", "-"], &bad);
    let message = s.post("/v1/pipelines", "application/json", bad.clone());
    assert_eq!(message.status, 400);
    assert!(
        message.error().contains("operators[0]"),
        "{}",
        message.error()
    );
    let line = format!("allsource pipelines: 400 Bad Request: {}", message.error());
    assert!(err.contains(&line), "{err}");
}
