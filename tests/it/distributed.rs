//! Distributed queries on Ballista: the same statements answered by the
//! server alone and by a Ballista scheduler with its executors (inside the
//! server with `--ballista local`, or as `allsource scheduler` and
//! `allsource executor` processes) give the same rows over stored events.

use crate::support::{TestServer, seeded, server_bin};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// 4,000 events of 300 entities over five days: visits, signups and buys
/// with amounts.
fn shop_events() -> Vec<Value> {
    let mut next = seeded(11);
    (0..4000)
        .map(|i| {
            let kind = match next(10) {
                0..=5 => "visit",
                6..=7 => "signup",
                _ => "buy",
            };
            let device = ["ios", "web"][next(2) as usize];
            json!({
                "event_id": format!("e{i:05}"),
                "event_type": kind,
                "entity_id": format!("u{}", next(300)),
                "timestamp": format!(
                    "2026-03-{:02}T{:02}:{:02}:00Z",
                    1 + next(5),
                    next(24),
                    next(60)
                ),
                "payload": {"amount": (next(100_000) as f64) / 100.0, "device": device},
            })
        })
        .collect()
}

/// The held-out style of queries: counts, distinct counts, percentiles, a
/// daily series, top entities, a funnel and retention.
const QUERIES: &[&str] = &[
    "SELECT count(*) AS n, count(DISTINCT entity_id) AS entities FROM events",
    "SELECT event_type, date_trunc('day', timestamp) AS day, count(*) AS n \
     FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT event_type, round(percentile_cont(0.95) WITHIN GROUP (ORDER BY amount), 6) AS p95, \
     round(approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY amount), 0) IS NOT NULL AS has_median \
     FROM events GROUP BY 1 ORDER BY 1",
    "SELECT entity_id, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC, entity_id LIMIT 10",
    "SELECT device, round(sum(amount), 4) AS total, count(*) FILTER (WHERE amount > 500) AS big \
     FROM events WHERE event_type = 'buy' GROUP BY 1 ORDER BY 1",
    "SELECT level, count(*) AS entities FROM (SELECT entity_id, \
       window_funnel(INTERVAL '1 day', timestamp, event_type = 'visit', event_type = 'signup', \
       event_type = 'buy') AS level FROM events GROUP BY entity_id) GROUP BY level ORDER BY level",
    "SELECT r, count(*) AS entities FROM (SELECT entity_id, \
       retention(event_date = DATE '2026-03-01', event_date = DATE '2026-03-03', \
       event_date = DATE '2026-03-05') AS r FROM events GROUP BY entity_id) \
     GROUP BY r ORDER BY r",
    "SELECT event_id, entity_id, amount FROM events WHERE entity_id = 'u7' ORDER BY event_id",
    "SELECT event_id, event_type, entity_id, timestamp FROM events \
     ORDER BY timestamp DESC, event_id LIMIT 10",
    "SELECT entity_id, round(sum(amount), 4) AS spent FROM events GROUP BY 1 \
     ORDER BY spent DESC, entity_id LIMIT 5",
];

fn distributed(s: &TestServer, sql: &str) -> crate::support::Reply {
    s.post("/v1/sql?engine=distributed", "text/plain", sql.to_string())
}

fn rows(reply: &crate::support::Reply, sql: &str) -> Value {
    assert_eq!(reply.status, 200, "{sql}: {}", reply.text());
    reply.json()
}

/// Every query answers the same on both engines, and the distributed
/// answers are not empty.
fn same_answers(s: &TestServer) {
    for sql in QUERIES {
        let local = Value::Array(s.sql(sql));
        let remote = rows(&distributed(s, sql), sql);
        assert_eq!(remote, local, "{sql}");
        assert!(
            local.as_array().is_some_and(|r| !r.is_empty()),
            "{sql}: no rows"
        );
    }
}

#[test]
fn ballista_in_the_server_answers_like_the_local_engine() {
    let mut s = TestServer::start(&["--ballista", "local", "--ballista-executors", "2"]);
    let events = shop_events();
    for chunk in events.chunks(1000) {
        s.ingest(&Value::Array(chunk.to_vec()));
    }
    // A restart flushes everything: both engines read the same files.
    s.stop();
    s.restart();
    same_answers(&s);

    // Buffered events stay on the server: the distributed engine reads
    // what is stored, and its reply says which position that is.
    s.ingest(
        &json!([{"event_type": "visit", "entity_id": "late", "timestamp": "2026-03-05T23:00:00Z"}]),
    );
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(4001));
    let sql = "SELECT count(*) AS n FROM events";
    let reply = distributed(&s, sql);
    assert_eq!(rows(&reply, sql), json!([{"n": 4000}]));
    let snapshot = reply.headers["x-allsource-snapshot"].to_str().unwrap();
    assert!(snapshot.starts_with("events=v"), "{snapshot}");
    assert!(snapshot.ends_with("@p4000"), "{snapshot}");

    // What it cannot run is refused, naming why.
    let cohorts = "SELECT * FROM cohorts('SELECT entity_id, timestamp, true AS j, true AS r FROM events', 'day', 2)";
    let r = distributed(&s, cohorts);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("cannot be read by a distributed query"),
        "{}",
        r.text()
    );
    let r = distributed(&s, "SELECT * FROM system.tables");
    assert_eq!(r.status, 400, "{}", r.text());
    for (sql, why) in [
        (
            "SELECT event_type, count(*) FROM events GROUP BY ROLLUP(event_type)",
            "ROLLUP",
        ),
        (
            "SELECT a.entity_id, count(b.event_id) FROM events a LEFT JOIN events b \
             ON a.event_id = b.event_id GROUP BY 1",
            "outer joins",
        ),
    ] {
        let r = distributed(&s, sql);
        assert_eq!(r.status, 400, "{sql}: {}", r.text());
        assert!(r.error().contains(why), "{sql}: {}", r.text());
    }
    // What reads no table runs as it would locally, with its columns.
    let sql = "SELECT 1 AS one";
    assert_eq!(rows(&distributed(&s, sql), sql), json!([{"one": 1}]));
    let sql = "SELECT event_id FROM events WHERE false";
    assert_eq!(rows(&distributed(&s, sql), sql), json!([]));
    let r = s.post("/v1/sql?engine=everywhere", "text/plain", "SELECT 1");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("unknown engine"), "{}", r.text());
    let r = s.post(
        "/v1/query?engine=distributed",
        "application/json",
        json!({"from": "events", "select": ["event_type"]}).to_string(),
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("local engine only"), "{}", r.text());
}

#[test]
fn a_server_without_a_cluster_refuses_distributed_queries() {
    let s = TestServer::start(&[]);
    s.ingest(&crate::support::events("visit", 3));
    let r = distributed(&s, "SELECT count(*) FROM events");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("--ballista"), "{}", r.text());
}

/// A cluster process, killed when the test ends.
pub(crate) struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `allsource ARGS` and returns it with the rest of the line it
/// prints after `prefix`.
pub(crate) fn start(
    args: &[&str],
    env: &[(&str, &str)],
    prefix: &str,
    log: &std::path::Path,
) -> (Process, String) {
    let mut child = Command::new(server_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start allsource");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&prefix) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let process = Process(child);
    let rest = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "allsource {args:?} did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (process, rest)
}

#[test]
fn a_scheduler_and_two_executor_processes_answer_like_the_local_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let (_scheduler, address) = start(
        &["scheduler", "--bind", "127.0.0.1:0"],
        &[],
        "allsource scheduler listening on ",
        &tmp.path().join("scheduler.log"),
    );
    let address = address.trim().to_string();
    let scheduler = address.trim_start_matches("df://").to_string();
    let mut executors = Vec::new();
    for i in 0..2 {
        let work = tmp.path().join(format!("work-{i}"));
        let (executor, _) = start(
            &[
                "executor",
                "--scheduler",
                &scheduler,
                "--bind",
                "127.0.0.1:0",
                "--slots",
                "2",
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &[],
            "allsource executor listening on ",
            &tmp.path().join(format!("executor-{i}.log")),
        );
        executors.push(executor);
    }
    let mut s = TestServer::start(&["--ballista", &address]);
    let events = shop_events();
    s.ingest(&Value::Array(events[..2000].to_vec()));
    s.ingest(&Value::Array(events[2000..].to_vec()));
    s.stop();
    s.restart();
    same_answers(&s);
}

#[test]
fn row_filters_and_access_policies_hold_on_the_distributed_engine() {
    use crate::support::{AUDIENCE, ISSUER, SECRET, hs, hs_server_with, now};
    let token = |role: &str| {
        hs(
            json!({"tenant": "acme", "role": role, "sub": format!("{role}-1"), "exp": now() + 600,
                   "iss": ISSUER, "aud": AUDIENCE}),
            SECRET,
            None,
        )
    };
    let (admin, reader) = (token("admin"), token("reader"));
    let mut s = hs_server_with(&["--ballista", "local"]);
    let orders: Vec<Value> = (0..20)
        .map(|i| {
            json!({"event_type": "order", "entity_id": format!("c{i}"),
                        "payload": {"region": if i % 2 == 0 { "EU" } else { "US" }}})
        })
        .collect();
    for (table, body) in [
        ("orders", Value::Array(orders)),
        ("payroll", crate::support::events("salary", 2)),
    ] {
        let r = s.post_as(
            &format!("/v1/events?table={table}"),
            &admin,
            "application/json",
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for policy in [
        json!({"name": "eu_only", "kind": "row_filter", "principals": {"roles": ["reader"]},
               "tables": ["orders"], "filter": "region = 'EU'"}),
        json!({"name": "no_payroll", "kind": "access", "effect": "deny", "actions": ["query"],
               "principals": {"roles": ["reader"]}, "tables": ["payroll"]}),
    ] {
        let r = s.post_with(
            "/v1/policies",
            &[
                ("content-type", "application/json"),
                ("authorization", &format!("Bearer {admin}")),
            ],
            policy.to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    s.stop();
    s.restart();
    let run =
        |token: &str, sql: &str| s.post_as("/v1/sql?engine=distributed", token, "text/plain", sql);
    // The admin reads every stored row on the cluster.
    let r = run(&admin, "SELECT count(*) AS n FROM orders");
    assert_eq!(rows(&r, "admin count"), json!([{"n": 20}]));
    // A reader's row filter is not sent to the executors: refused, with
    // the reason, and no rows.
    let r = run(&reader, "SELECT count(*) AS n FROM orders");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("row filters"), "{}", r.text());
    // A denied table stays denied.
    let r = run(&reader, "SELECT count(*) AS n FROM payroll");
    assert_eq!(r.status, 403, "{}", r.text());
    // Locally the reader sees the EU half.
    let r = s.post_as(
        "/v1/sql",
        &reader,
        "text/plain",
        "SELECT count(*) AS n FROM orders",
    );
    assert_eq!(rows(&r, "reader count"), json!([{"n": 10}]));
}
