//! Projections through HTTP: defined from SQL, kept equal to their query
//! over every acknowledged event (across `kill -9`), read by key and as
//! SQL tables, refused with the reason when they cannot be maintained,
//! and kept apart by tenant.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

/// The query `user_stats` is defined with; the same SQL over `events`
/// gives what its state must hold.
const USER_STATS: &str = "SELECT entity_id, count(*) AS events, \
     sum(amount) FILTER (WHERE event_type = 'order') AS revenue, \
     max(plan) AS top_plan, count(DISTINCT event_type) AS kinds, \
     last_value(plan ORDER BY position) AS plan, avg(amount) AS mean \
     FROM events WHERE event_type <> 'noise' GROUP BY entity_id";

/// `n` events from a seeded generator: amounts in quarters, so that every
/// sum is exact whatever the order of the additions.
pub(crate) fn round(seed: u64, n: usize) -> Value {
    let mut next = seeded(seed);
    let types = ["order", "view", "noise", "signup"];
    let plans = ["free", "pro", "team"];
    Value::Array(
        (0..n)
            .map(|_| {
                json!({
                    "event_type": types[next(4) as usize],
                    "entity_id": format!("u{}", next(9)),
                    "payload": {
                        "amount": next(400) as f64 / 4.0,
                        "plan": plans[next(3) as usize],
                    },
                })
            })
            .collect(),
    )
}

fn define(s: &TestServer, name: &str, query: &str) -> crate::support::Reply {
    s.post(
        "/v1/projections",
        "application/json",
        json!({"name": name, "query": query}).to_string(),
    )
}

/// Waits until the projection has folded every event of `events`.
fn caught_up(s: &TestServer, name: &str) {
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until("the projection catches up", Duration::from_secs(30), || {
        let info = s.get(&format!("/v1/projections/{name}")).json();
        assert_eq!(info["status"], "running", "{info}");
        info["position"] == highest
    });
}

pub(crate) fn state(s: &TestServer, path: &str) -> Vec<Value> {
    let r = s.get(path);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains_key("x-allsource-position"));
    let mut rows = r.json().as_array().unwrap().clone();
    rows.sort_by_key(|r| r["entity_id"].to_string());
    rows
}

/// The state equals the query over the table, by HTTP and as a table.
fn check(s: &TestServer) {
    caught_up(s, "user_stats");
    let expected = s.sql(&format!("{USER_STATS} ORDER BY entity_id"));
    assert!(!expected.is_empty());
    assert_eq!(state(s, "/v1/projections/user_stats/state"), expected);
    let table = s.sql("SELECT * FROM projections.user_stats ORDER BY entity_id");
    assert_eq!(table, expected);
}

#[test]
fn a_projection_equals_its_query_over_every_event_across_kill9() {
    // Snapshots are written often, so kills land before, during and
    // after them.
    let mut s = TestServer::start(&["--projection-snapshot-interval", "50ms"]);
    s.ingest(&round(1, 50));
    let r = define(&s, "user_stats", USER_STATS);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["table"], "events");
    check(&s);
    for cycle in 0..10u64 {
        s.ingest(&round(100 + cycle, 40));
        check(&s);
        // Acknowledged, then killed before anything is flushed: the state
        // after the restart still holds these events, once.
        s.ingest(&round(200 + cycle, 30));
        s.kill9();
        s.restart();
        check(&s);
    }
    // One key's row, by key; a joined read.
    let one = state(&s, "/v1/projections/user_stats/state?key=u3");
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0],
        s.sql(&format!(
            "SELECT * FROM ({USER_STATS}) WHERE entity_id = 'u3'"
        ))[0]
    );
    let joined =
        s.scalar("SELECT count(*) FROM events e JOIN projections.user_stats p USING (entity_id)");
    assert_eq!(
        joined,
        s.scalar("SELECT count(*) FROM events WHERE entity_id IN (SELECT entity_id FROM events WHERE event_type <> 'noise')")
    );
    let r = s.get("/v1/projections/user_stats/state?key=u3&key=x");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("1 key column"), "{}", r.error());

    // Deleted, it is gone, also after a restart.
    assert_eq!(s.delete("/v1/projections/user_stats").status, 204);
    assert_eq!(s.get("/v1/projections/user_stats").status, 404);
    s.stop();
    s.restart();
    assert_eq!(s.get("/v1/projections").json()["projections"], json!([]));
}

fn info(s: &TestServer, name: &str) -> Value {
    let r = s.get(&format!("/v1/projections/{name}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The snapshot directories of the default tenant.
fn snapshots(s: &TestServer) -> Vec<String> {
    let dir = s.data_dir.join("tables/default/_snapshots");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn a_restart_loads_the_snapshot_and_folds_only_the_events_after_it() {
    let mut s = TestServer::start(&["--projection-snapshot-interval", "1s"]);
    s.ingest(&round(7, 300));
    assert_eq!(define(&s, "user_stats", USER_STATS).status, 201);
    check(&s);
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until("a snapshot", Duration::from_secs(30), || {
        info(&s, "user_stats")["snapshot_position"] == highest
    });
    assert_eq!(snapshots(&s).len(), 1, "{:?}", snapshots(&s));
    let seen = info(&s, "user_stats")["snapshot_position"]
        .as_u64()
        .unwrap();

    // Events after the snapshot, then kill -9: the restart loads the
    // snapshot and folds only those.
    s.ingest(&round(8, 120));
    s.kill9();
    s.restart();
    let restored = info(&s, "user_stats")["restored_position"]
        .as_u64()
        .unwrap();
    assert!(
        restored >= seen,
        "restored at {restored}, snapshot was at {seen}"
    );
    check(&s);
    let log = s.log();
    assert!(log.contains("projection loaded from its snapshot"), "{log}");

    // A clean stop snapshots the state as it is: the restart folds nothing.
    s.ingest(&round(9, 80));
    check(&s);
    let highest = s.scalar("SELECT max(position) FROM events");
    s.stop();
    s.restart();
    let i = info(&s, "user_stats");
    assert_eq!(i["restored_position"], highest, "{i}");
    check(&s);
    let row = &s.sql("SELECT snapshot_position, position FROM system.projections")[0];
    assert_eq!(row["snapshot_position"], highest, "{row}");

    // The snapshot is a Delta table other engines read: one row per group.
    let dir = s.data_dir.join("tables/default/_snapshots");
    let name = &snapshots(&s)[0];
    let out = std::process::Command::new(crate::support::python())
        .arg("-c")
        // `os._exit` skips the interpreter's teardown, which aborts with
        // some package combinations after the work is done.
        .arg("import os, sys, deltalake; t = deltalake.DeltaTable(sys.argv[1]); print(t.to_pyarrow_table().num_rows); sys.stdout.flush(); os._exit(0)")
        .arg(dir.join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let groups = s.scalar(&format!("SELECT count(*) FROM ({USER_STATS})"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        groups.to_string()
    );

    // A projection deleted and defined again under the same name starts
    // from nothing, not from the old snapshot; the old snapshot goes.
    assert_eq!(s.delete("/v1/projections/user_stats").status, 204);
    wait_until("the snapshot is deleted", Duration::from_secs(10), || {
        snapshots(&s).is_empty()
    });
    let narrower = "SELECT entity_id, count(*) AS events FROM events WHERE event_type = 'order' GROUP BY entity_id";
    assert_eq!(define(&s, "user_stats", narrower).status, 201);
    caught_up(&s, "user_stats");
    s.stop();
    // A snapshot no projection owns (as a crash between a deletion and
    // its cleanup leaves) is deleted at start-up.
    std::fs::create_dir_all(dir.join("gone.123/_delta_log")).unwrap();
    s.restart();
    assert_eq!(snapshots(&s).len(), 1, "{:?}", snapshots(&s));
    let mut got = state(&s, "/v1/projections/user_stats/state");
    let mut expected = s.sql(&format!("{narrower} ORDER BY entity_id"));
    got.sort_by_key(|r| r["entity_id"].to_string());
    expected.sort_by_key(|r| r["entity_id"].to_string());
    assert_eq!(got, expected);
}

/// The README's example: the seed system's `user-statistics`.
#[test]
fn the_readme_user_statistics_example() {
    let s = TestServer::start(&[]);
    let event = |kind: &str, user: &str, payload: Value| json!({"event_type": kind, "entity_id": user, "payload": payload});
    s.ingest(&json!([
        event("signup", "u42", json!({"plan": "free"})),
        event("order", "u42", json!({"amount": 30.5})),
        event("plan_changed", "u42", json!({"plan": "pro"})),
        event("order", "u7", json!({"amount": 12.0})),
        event("page_view", "u7", json!({"amount": 99.0})),
    ]));
    let query = "SELECT entity_id AS user, count(*) FILTER (WHERE event_type = 'order') AS orders,
          sum(amount) FILTER (WHERE event_type = 'order') AS revenue,
          last_value(plan ORDER BY position) FILTER (WHERE plan IS NOT NULL) AS plan,
          max(timestamp) AS last_seen
   FROM events WHERE event_type IN ('signup', 'order', 'plan_changed')
   GROUP BY entity_id";
    let r = define(&s, "user_stats", query);
    assert_eq!(r.status, 201, "{}", r.text());
    s.ingest(&json!([event("order", "u42", json!({"amount": 9.5}))]));
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until("caught up", Duration::from_secs(30), || {
        s.get("/v1/projections/user_stats").json()["position"] == highest
    });
    let row = s.get("/v1/projections/user_stats/state?key=u42").json();
    assert_eq!(row[0]["orders"], 2);
    assert_eq!(row[0]["revenue"], 40.0);
    assert_eq!(row[0]["plan"], "pro");
    let totals =
        s.sql("SELECT count(*) AS users, sum(revenue) AS revenue FROM projections.user_stats");
    assert_eq!(totals, vec![json!({"users": 2, "revenue": 52.0})]);
}

#[test]
fn a_global_projection_and_one_defined_before_its_columns_have_values() {
    let s = TestServer::start(&[]);
    s.ingest(&round(7, 20));
    let r = define(
        &s,
        "totals",
        "SELECT count(*) AS n, sum(amount) AS total, min(timestamp) AS first_seen FROM events",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    s.ingest(&round(8, 25));
    let highest = s.scalar("SELECT max(position) FROM events");
    wait_until("caught up", Duration::from_secs(30), || {
        s.get("/v1/projections/totals").json()["position"] == highest
    });
    let rows = s.get("/v1/projections/totals/state").json();
    assert_eq!(
        rows,
        json!(s.sql(
            "SELECT count(*) AS n, sum(amount) AS total, min(timestamp) AS first_seen FROM events"
        ))
    );
    assert_eq!(rows[0]["n"], 45);
    let info = s.get("/v1/projections").json();
    assert_eq!(info["projections"][0]["rows"], 1);
    assert_eq!(info["projections"][0]["lag_positions"], 0);
    assert_eq!(
        s.metric(r#"allsource_projection_lag_positions{projection="totals",tenant="default"}"#),
        0.0
    );
    assert_eq!(
        s.metric(r#"allsource_projection_rows{projection="totals",tenant="default"}"#),
        1.0
    );
    // A key read finds the group by its GROUP BY values, wherever (and
    // whether) the select list shows them.
    let r = define(
        &s,
        "by_pair",
        "SELECT count(*) AS n FROM events GROUP BY entity_id, event_type",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = define(
        &s,
        "counts",
        "SELECT count(*) AS n, entity_id FROM events GROUP BY entity_id",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_until("caught up", Duration::from_secs(30), || {
        ["by_pair", "counts"]
            .iter()
            .all(|p| s.get(&format!("/v1/projections/{p}")).json()["position"] == highest)
    });
    let pair = s
        .get("/v1/projections/by_pair/state?key=u3&key=order")
        .json();
    assert_eq!(
        pair,
        json!(s.sql(
            "SELECT count(*) AS n FROM events WHERE entity_id = 'u3' AND event_type = 'order'"
        ))
    );
    let one = s.get("/v1/projections/counts/state?key=u3").json();
    assert_eq!(
        one,
        json!(s.sql(
            "SELECT count(*) AS n, entity_id FROM events WHERE entity_id = 'u3' GROUP BY entity_id"
        ))
    );
    let r = s.get("/v1/projections/counts/state?key=u3&key=x");
    assert_eq!(r.status, 400, "{}", r.text());
    let system = s.sql("SELECT name, table_name, lag_positions, rows, status, error FROM system.projections WHERE name = 'totals'");
    assert_eq!(
        system,
        vec![
            json!({"name": "totals", "table_name": "events", "lag_positions": 0, "rows": 1, "status": "running", "error": null})
        ]
    );
}

#[test]
fn queries_that_cannot_be_maintained_are_refused_with_the_reason() {
    let s = TestServer::start(&["--max-projections", "2"]);
    s.ingest(&round(3, 10));
    for (query, expected) in [
        (
            "SELECT entity_id, median(amount) FROM events GROUP BY entity_id",
            "median cannot be updated from new events alone",
        ),
        (
            "SELECT entity_id, count(*) AS n FROM events GROUP BY entity_id ORDER BY n DESC LIMIT 5",
            "LIMIT: a projection keeps every group",
        ),
        (
            "SELECT entity_id, count(*), rank() OVER (ORDER BY entity_id) FROM events GROUP BY entity_id",
            "a window function's value depends on the rows around each row",
        ),
        (
            "SELECT a.entity_id, count(*) FROM events a JOIN events b ON a.event_id = b.event_id GROUP BY a.entity_id",
            "a join: a projection reads one table",
        ),
        ("SELECT entity_id FROM events", "it has no aggregate"),
        ("SELECT count(*) FROM nope", "nope"),
        ("SELEC count(*) FROM events", "SELEC"),
    ] {
        let r = define(&s, "p", query);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.error().contains(expected), "{query}: {}", r.error());
    }
    let r = define(&s, "Bad-Name", "SELECT count(*) FROM events");
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("invalid projection name"),
        "{}",
        r.error()
    );
    let r = s.post("/v1/projections", "application/json", r#"{"name": "p"}"#);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("\"query\""), "{}", r.error());
    // Names are unique; a tenant's projections are capped.
    assert_eq!(define(&s, "a", "SELECT count(*) FROM events").status, 201);
    let r = define(&s, "a", "SELECT count(*) FROM events");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(define(&s, "b", "SELECT count(*) FROM events").status, 201);
    let r = define(&s, "c", "SELECT count(*) FROM events");
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("--max-projections"), "{}", r.error());
    assert_eq!(s.get("/v1/projections/zzz").status, 404);
    assert_eq!(s.get("/v1/projections/a/state?k=1").status, 400);
}

#[test]
fn a_tenants_projections_are_its_own() {
    let s = hs_server();
    let (a, b) = (token("acme", "writer"), token("globex", "admin"));
    let r = s.post_as(
        "/v1/events",
        &a,
        "application/json",
        &round(5, 10).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = json!({"name": "counts", "query": "SELECT event_type, count(*) AS n FROM events GROUP BY event_type"});
    let r = s.post_as("/v1/projections", &a, "application/json", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    // A reader may read but not define.
    let reader = token("acme", "reader");
    let r = s.post_as(
        "/v1/projections",
        &reader,
        "application/json",
        &body.to_string(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(s.get_as("/v1/projections/counts", &reader).status, 200);
    // Another tenant sees nothing of it.
    assert_eq!(
        s.get_as("/v1/projections", &b).json(),
        json!({"projections": []})
    );
    assert_eq!(s.get_as("/v1/projections/counts", &b).status, 404);
    assert_eq!(s.get_as("/v1/projections/counts/state", &b).status, 404);
    let r = s.post_as(
        "/v1/sql",
        &b,
        "text/plain",
        "SELECT * FROM projections.counts",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.post_as(
        "/v1/sql",
        &a,
        "text/plain",
        "SELECT sum(n) AS n FROM projections.counts",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

fn define_version(s: &TestServer, name: &str, query: &str, version: u32, promote: &str) -> Reply {
    s.post(
        "/v1/projections",
        "application/json",
        json!({"name": name, "query": query, "version": version, "promote": promote}).to_string(),
    )
}

/// The projection's rows equal `query`'s over the table.
fn equals_query(s: &TestServer, name: &str, query: &str) {
    caught_up(s, name);
    let expected = s.sql(&format!("{query} ORDER BY entity_id"));
    assert_eq!(state(s, &format!("/v1/projections/{name}/state")), expected);
    let table = s.sql(&format!(
        "SELECT * FROM projections.{name} ORDER BY entity_id"
    ));
    assert_eq!(table, expected);
}

#[test]
fn a_new_version_builds_in_the_background_and_replaces_the_old_one() {
    const V1: &str = "SELECT entity_id, count(*) AS events FROM events GROUP BY entity_id";
    const V3: &str = "SELECT entity_id, max(amount) AS top FROM events GROUP BY entity_id";
    let mut s = TestServer::start(&["--projection-snapshot-interval", "100ms"]);
    s.ingest(&round(11, 400));
    assert_eq!(define(&s, "stats", V1).status, 201);
    equals_query(&s, "stats", V1);

    // The same version again, or a lower one: refused.
    for version in [1, 0] {
        let r = define_version(&s, "stats", V3, version, "auto");
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(r.error().contains("at version 1"), "{}", r.error());
    }
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "stats", "query": V3, "version": 2, "promote": "later"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // Version 2, promoted by hand: it builds while version 1 serves.
    let r = define_version(&s, "stats", USER_STATS, 2, "manual");
    assert_eq!(r.status, 202, "{}", r.text());
    let i = r.json();
    assert_eq!(
        (i["version"].clone(), i["next"]["version"].clone()),
        (json!(1), json!(2)),
        "{i}"
    );
    wait_until("version 2 catches up", Duration::from_secs(30), || {
        info(&s, "stats")["next"]["caught_up"] == true
    });
    equals_query(&s, "stats", V1);

    // Across kill -9, both versions come back: version 1 serving, version
    // 2 building, each equal to its query.
    s.ingest(&round(12, 60));
    s.kill9();
    s.restart();
    let i = info(&s, "stats");
    assert_eq!(
        (i["version"].clone(), i["next"]["version"].clone()),
        (json!(1), json!(2)),
        "{i}"
    );
    equals_query(&s, "stats", V1);
    wait_until(
        "version 2 catches up again",
        Duration::from_secs(30),
        || info(&s, "stats")["next"]["caught_up"] == true,
    );
    let r = s.post("/v1/projections/stats/promote", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let i = info(&s, "stats");
    assert_eq!(i["version"], 2, "{i}");
    assert!(i.get("next").is_none(), "{i}");
    equals_query(&s, "stats", USER_STATS);
    let r = s.post("/v1/projections/stats/promote", "application/json", "");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.error().contains("no next version"), "{}", r.error());

    // A rebuild folds the same query again and takes over.
    let created = info(&s, "stats")["created_ms"].clone();
    let r = s.post("/v1/projections/stats/rebuild", "application/json", "");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until("the rebuild takes over", Duration::from_secs(30), || {
        let i = info(&s, "stats");
        i["created_ms"] != created && i.get("next").is_none()
    });
    assert_eq!(info(&s, "stats")["version"], 2);
    equals_query(&s, "stats", USER_STATS);

    // Version 3, promoted as soon as it has caught up.
    assert_eq!(define_version(&s, "stats", V3, 3, "auto").status, 202);
    wait_until("version 3 serves", Duration::from_secs(30), || {
        info(&s, "stats")["version"] == 3
    });
    s.ingest(&round(13, 40));
    equals_query(&s, "stats", V3);
    // Only the serving version's snapshot is left.
    wait_until(
        "replaced snapshots are deleted",
        Duration::from_secs(30),
        || snapshots(&s).len() <= 1,
    );
    s.stop();
    s.restart();
    assert_eq!(info(&s, "stats")["version"], 3);
    equals_query(&s, "stats", V3);
    assert_eq!(snapshots(&s).len(), 1, "{:?}", snapshots(&s));
}

#[test]
fn a_projection_defined_as_a_dsl_document() {
    let mut s = TestServer::start(&[]);
    s.ingest(&round(21, 300));
    let doc = json!({
        "from": "events",
        "select": ["entity_id", ["as", ["count"], "events"], ["as", ["sum", "amount"], "total"],
                   ["as", ["max", "plan"], "top_plan"], ["as", ["count-distinct", "event_type"], "kinds"]],
        "where": ["!=", "event_type", "noise"],
        "group-by": ["entity_id"],
    });
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "by_dsl", "dsl": doc}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["language"], "dsl");
    let batch = |s: &TestServer| {
        let mut ordered = doc.clone();
        ordered["order-by"] = json!(["entity_id"]);
        let r = s.post("/v1/query", "application/json", ordered.to_string());
        assert_eq!(r.status, 200, "{}", r.text());
        r.json().as_array().unwrap().clone()
    };
    caught_up(&s, "by_dsl");
    assert_eq!(state(&s, "/v1/projections/by_dsl/state"), batch(&s));
    s.ingest(&round(22, 100));
    s.kill9();
    s.restart();
    caught_up(&s, "by_dsl");
    assert_eq!(state(&s, "/v1/projections/by_dsl/state"), batch(&s));

    // What the DSL cannot keep is refused with the part, as SQL is.
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "p90", "dsl": {"from": "events", "select": [["percentile", "amount", 0.9]]}})
            .to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("percentile"), "{}", r.error());
    let r = s.post(
        "/v1/projections",
        "application/json",
        json!({"name": "both", "query": "SELECT count(*) FROM events", "dsl": doc}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("one of the two"), "{}", r.error());
}

#[test]
fn a_state_larger_than_the_result_limit_is_refused_and_keys_still_read() {
    let s = TestServer::start(&["--max-result-bytes", "300"]);
    s.ingest(&round(31, 50));
    let q = "SELECT event_id, count(*) AS n FROM events GROUP BY event_id";
    assert_eq!(define(&s, "per_event", q).status, 201);
    caught_up(&s, "per_event");
    let r = s.get("/v1/projections/per_event/state");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("--max-result-bytes"), "{}", r.error());
    let id = s.scalar("SELECT min(event_id) FROM events");
    let r = s.get(&format!(
        "/v1/projections/per_event/state?key={}",
        id.as_str().unwrap()
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()[0]["n"], 1);
}
