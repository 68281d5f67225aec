//! Reads pinned to a point in time: `?as_of=` on `/v1/sql` and
//! `/v1/query`, `as_of(table, position => N)` in SQL, and the
//! `x-allsource-snapshot` header saying what a query read.

use crate::support::{Reply, TestServer, wait_until};
use serde_json::{Value, json};

fn batch(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"event_id": format!("{prefix}{i}"), "event_type": "t", "entity_id": format!("e{}", i % 3)}))
            .collect(),
    )
}

fn sql_as_of(s: &TestServer, sql: &str, as_of: &str) -> Reply {
    let path = format!("/v1/sql?as_of={}", urlencode(as_of));
    s.post(&path, "text/plain", sql.to_string())
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

fn count(r: &Reply) -> u64 {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()[0]["n"].as_u64().unwrap()
}

#[test]
fn a_read_as_of_a_position_sees_exactly_what_was_acknowledged_by_then() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    let mut marks = Vec::new();
    let mut total = 0;
    for (round, n) in [5usize, 7, 4, 6].into_iter().enumerate() {
        let reply = s.ingest(&batch(&format!("r{round}-"), n));
        total += n as u64;
        marks.push((reply["last_position"].as_u64().unwrap(), total));
        // The first two rounds go to storage, the last two stay buffered.
        if round == 1 {
            s.stop();
            s.restart();
        }
    }
    let check = |s: &TestServer, stage: &str| {
        for (position, expected) in &marks {
            let r = sql_as_of(
                s,
                "SELECT count(*) AS n FROM events",
                &format!("position:{position}"),
            );
            assert_eq!(count(&r), *expected, "{stage}: as_of=position:{position}");
            let inline = format!("SELECT count(*) AS n FROM as_of(events, position => {position})");
            let r = s.post("/v1/sql", "text/plain", inline.clone());
            assert_eq!(count(&r), *expected, "{stage}: {inline}");
            let pinned =
                json!({"select": [["count"]], "from": "events", "as-of": {"position": position}});
            let r = s.post("/v1/query", "application/json", pinned.to_string());
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.json()[0].as_object().unwrap().values().next().unwrap(),
                expected,
                "{stage}: DSL as-of"
            );
            let doc = json!({"select": [["count"]], "from": "events"}).to_string();
            let r = s.post(
                &format!("/v1/query?as_of=position%3A{position}"),
                "application/json",
                doc,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(
                r.json()[0].as_object().unwrap().values().next().unwrap(),
                expected,
                "{stage}: DSL"
            );
        }
    };
    check(&s, "buffer and storage");
    // Every reply says what it read: the table's Delta version and the
    // highest position visible.
    let r = s.post("/v1/sql", "text/plain", "SELECT count(*) AS n FROM events");
    let header = r.headers["x-allsource-snapshot"]
        .to_str()
        .unwrap()
        .to_string();
    let last = marks.last().unwrap().0;
    assert!(
        header.starts_with("events=v") && header.ends_with(&format!("@p{last}")),
        "{header}"
    );
    let pinned = sql_as_of(
        &s,
        "SELECT count(*) AS n FROM events",
        &format!("position:{}", marks[1].0),
    );
    assert!(
        pinned.headers["x-allsource-snapshot"]
            .to_str()
            .unwrap()
            .ends_with(&format!("@p{}", marks[1].0)),
        "{:?}",
        pinned.headers
    );
    // Compaction rewrites the files; positions are data, so the same
    // reads give the same rows.
    s.stop();
    s.restart();
    let r = s.post("/v1/admin/compact", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    check(&s, "after compaction");
}

#[test]
fn a_read_as_of_a_time_sees_the_rows_ingested_by_then() {
    let s = TestServer::start(&[]);
    s.ingest(&batch("early-", 4));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.ingest(&batch("late-", 3));
    let r = sql_as_of(&s, "SELECT count(*) AS n FROM events", &between);
    assert_eq!(count(&r), 4, "as_of={between}");
    let r = s.post(
        "/v1/sql",
        "text/plain",
        format!("SELECT count(*) AS n FROM as_of(events, timestamp => '{between}')"),
    );
    assert_eq!(count(&r), 4);
    let header = r.headers["x-allsource-snapshot"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        header.ends_with("@p-"),
        "a time pin names no position: {header}"
    );
}

#[test]
fn bad_pins_get_400_naming_the_problem() {
    let s = TestServer::start(&[]);
    s.ingest(&batch("x", 2));
    for (as_of, needle) in [("position:x", "whole number"), ("yesterday", "RFC 3339")] {
        let r = sql_as_of(&s, "SELECT 1", as_of);
        assert_eq!(r.status, 400, "{as_of}: {}", r.text());
        assert!(r.error().contains(needle), "{as_of}: {}", r.error());
    }
    for (sql, needle) in [
        ("SELECT * FROM as_of(events, colour => 1)", "unknown pin"),
        ("SELECT * FROM as_of(events)", "as_of takes a table"),
        (
            "SELECT * FROM as_of(events, position => 'x')",
            "whole number",
        ),
        ("SELECT * FROM as_of(nosuch, position => 1)", "nosuch"),
    ] {
        let r = s.post("/v1/sql", "text/plain", sql.to_string());
        assert_eq!(r.status, 400, "{sql}: {}", r.text());
        assert!(r.error().contains(needle), "{sql}: {}", r.error());
    }
}

/// The Delta version the reply's snapshot header names for `events`.
fn delta_version(r: &Reply) -> u64 {
    let header = r.headers["x-allsource-snapshot"].to_str().unwrap();
    let v = header.strip_prefix("events=v").unwrap();
    v[..v.find('@').unwrap()].parse().unwrap()
}

#[test]
fn a_table_version_reads_its_files_until_vacuum_removes_them() {
    // Vacuum keeps replaced files for the query timeout at least; 3 s
    // leaves a slow machine's queries time to finish.
    let mut s = TestServer::start(&["--vacuum-retention", "0s", "--query-timeout", "3s"]);
    let count_sql = "SELECT count(*) AS n FROM events";
    s.ingest(&batch("a", 5));
    s.stop();
    s.restart();
    let first = delta_version(&s.post("/v1/sql", "text/plain", count_sql));
    s.ingest(&batch("b", 4));
    s.stop();
    s.restart();
    let second = delta_version(&s.post("/v1/sql", "text/plain", count_sql));
    assert!(second > first);
    let at = |s: &TestServer, v: u64| {
        let sql = format!("SELECT count(*) AS n FROM as_of(events, table_version => {v})");
        s.post("/v1/sql", "text/plain", sql)
    };
    let r = at(&s, first);
    assert_eq!(count(&r), 5);
    assert!(
        r.headers["x-allsource-snapshot"]
            .to_str()
            .unwrap()
            .starts_with(&format!("events=v{first}@"))
    );
    assert_eq!(count(&at(&s, second)), 9);
    let doc = json!({"select": [["count"]], "from": "events", "as-of": {"table_version": first}});
    let r = s.post("/v1/query", "application/json", doc.to_string());
    assert_eq!(r.json()[0].as_object().unwrap().values().next().unwrap(), 5);
    let r = at(&s, 999);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("no version 999"), "{}", r.error());
    // Compaction replaces the files; the old version stays readable until
    // vacuum deletes them, then it is refused, never answered wrongly.
    let r = s.post("/v1/admin/compact", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&at(&s, first)), 5, "before vacuum");
    wait_until(
        "vacuum removes the replaced files",
        std::time::Duration::from_secs(60),
        || {
            let r = s.post("/v1/admin/compact", "application/json", "");
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["reports"][0]["vacuumed_files"].as_u64().unwrap() > 0
        },
    );
    let r = at(&s, first);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("vacuum removed"), "{}", r.error());
    // Position pins do not depend on old files.
    let r = sql_as_of(&s, count_sql, "position:5");
    assert_eq!(count(&r), 5);
}
