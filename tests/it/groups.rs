//! Durable subscriptions (consumer groups): made, listed, inspected, reset
//! and deleted over HTTP; consumed over WebSocket by a real client
//! (Python `websockets`); shared by entity among consumers; resumed after
//! the last stored acknowledgement across disconnects and `kill -9`.

use crate::support::{self, TestServer};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) fn consume_url(s: &TestServer, name: &str) -> String {
    format!(
        "{}/v1/subscriptions/{name}/consume?heartbeat_ms=200",
        s.base.replacen("http://", "ws://", 1)
    )
}

/// A consumer process (`ws_client.py consume`), its output lines parsed as
/// they come.
pub(crate) struct Consumer {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    pub(crate) fn start(url: &str, idle_beats: u32) -> Consumer {
        let mut child = Command::new(support::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/python/ws_client.py"
            ))
            .args(["consume", url, &idle_beats.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                // A consumer killed mid-line leaves a part of one (the
                // acknowledgement after it was never sent).
                let Ok(v) = serde_json::from_str(&line.unwrap()) else {
                    continue;
                };
                sink.lock().unwrap().push(v);
            }
        });
        Consumer {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// Waits for the process to end (it stops when idle or disconnected);
    /// returns its lines.
    pub(crate) fn finish(mut self) -> Vec<Value> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the consumer failed");
        self.reader.take().unwrap().join().unwrap();
        self.lines.lock().unwrap().clone()
    }

    /// Disconnects the consumer (kills its process); returns its lines.
    fn kill(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reader.take().unwrap().join().unwrap();
        self.lines.lock().unwrap().clone()
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }
}

/// The (position, entity) of every event in `lines`, in order.
pub(crate) fn delivered(lines: &[Value]) -> Vec<(u64, String)> {
    lines
        .iter()
        .filter_map(|l| l.get("events"))
        .flat_map(|e| e.as_array().unwrap().clone())
        .map(|e| {
            (
                e[0].as_u64().unwrap(),
                e[1].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The last acknowledgement the server confirmed in `lines`.
fn last_acked(lines: &[Value]) -> Option<u64> {
    lines
        .iter()
        .filter_map(|l| l.get("acked"))
        .filter_map(Value::as_u64)
        .max()
}

fn events(from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                json!({"event_id": format!("e{i}"),
                       "event_type": if i.is_multiple_of(3) { "skip" } else { "order" },
                       "entity_id": format!("c{}", i % 7), "payload": {"n": i}})
            })
            .collect(),
    )
}

/// The positions of the acknowledged events that are not of type `skip`.
fn acked_orders(reply: &Value, first: usize) -> Vec<u64> {
    reply["events"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(i, _)| !(first + i).is_multiple_of(3))
        .map(|(_, e)| e["position"].as_u64().unwrap())
        .collect()
}

fn create(s: &TestServer, body: Value) -> support::Reply {
    s.post("/v1/subscriptions", "application/json", body.to_string())
}

#[test]
fn subscriptions_are_made_listed_inspected_reset_and_deleted() {
    let s = TestServer::start(&["--max-consumer-groups", "2"]);
    s.ingest(&events(0, 9));
    let filter = "event_type = 'order'";
    let r = create(
        &s,
        json!({"name": "billing", "table": "events", "filter": filter, "start": "earliest"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json();
    assert_eq!(made["committed_position"], 0);
    assert_eq!(made["consumers"], 0);
    for (body, status, needle) in [
        (
            json!({"name": "billing", "table": "events"}),
            409,
            "already exists",
        ),
        (
            json!({"name": "Bad-Name", "table": "events"}),
            400,
            "invalid subscription name",
        ),
        (json!({"name": "x", "table": "nope"}), 404, "does not exist"),
        (
            json!({"name": "x", "table": "events", "filter": "nope > 1"}),
            400,
            "nope",
        ),
        (
            json!({"name": "x", "table": "events", "where": ["=="]}),
            400,
            "where",
        ),
        (
            json!({"name": "x", "table": "events", "start": "soon"}),
            400,
            "earliest, now",
        ),
        (
            json!({"name": "x", "table": "events", "what": 1}),
            400,
            "what",
        ),
    ] {
        let r = create(&s, body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.text());
        assert!(r.error().contains(needle), "{body}: {}", r.error());
    }
    let r = create(&s, json!({"name": "audit", "table": "events"}));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["committed_position"],
        9,
        "start=now is the default"
    );
    let r = create(&s, json!({"name": "third", "table": "events"}));
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.error().contains("--max-consumer-groups"), "{}", r.error());

    // Six of the nine events are orders; all are after the start.
    let shown = s.get("/v1/subscriptions/billing").json();
    assert_eq!(shown["lag_events"], 6, "{shown}");
    assert_eq!(shown["lag_positions"], 9, "{shown}");
    assert!(shown["lag_seconds"].as_f64().unwrap() >= 0.0, "{shown}");
    assert_eq!(shown["filter"], filter);
    let listed = s.get("/v1/subscriptions").json();
    let names: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    let rows = s.sql(
        "SELECT name, table_name, committed_position, lag_positions, consumers FROM system.subscriptions ORDER BY name",
    );
    assert_eq!(
        rows,
        vec![
            json!({"name": "audit", "table_name": "events", "committed_position": 9, "lag_positions": 0, "consumers": 0}),
            json!({"name": "billing", "table_name": "events", "committed_position": 0, "lag_positions": 9, "consumers": 0}),
        ]
    );
    let metrics = s.get("/metrics").text();
    assert!(
        metrics.contains(
            "allsource_subscription_lag_positions{subscription=\"billing\",tenant=\"default\"} 9"
        ),
        "{metrics}"
    );

    // Reset to after position 6. Positions 1 to 9 hold e0 to e8, of which
    // e7 and e8 (positions 8 and 9) are orders.
    let r = s.post(
        "/v1/subscriptions/billing/reset",
        "application/json",
        json!({"start": "after:6"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["committed_position"], 6);
    let shown = s.get("/v1/subscriptions/billing").json();
    assert_eq!(shown["lag_events"], 2, "e7 and e8: {shown}");
    let r = s.post(
        "/v1/subscriptions/billing/reset",
        "application/json",
        json!({"start": "later"}).to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // Made and reset durably: a restart keeps them.
    let mut s = s;
    s.stop();
    s.restart();
    let shown = s.get("/v1/subscriptions/billing").json();
    assert_eq!(shown["committed_position"], 6, "{shown}");
    let r = reqwest::blocking::Client::new()
        .delete(s.url("/v1/subscriptions/billing"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.get("/v1/subscriptions/billing").status, 404);
    s.kill9();
    s.restart();
    assert_eq!(s.get("/v1/subscriptions/billing").status, 404);
    assert_eq!(
        s.get("/v1/subscriptions").json()["subscriptions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Consuming needs a WebSocket.
    let r = s.get("/v1/subscriptions/audit/consume");
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn consumers_of_a_subscription_share_it_by_entity_each_entity_in_order() {
    let s = TestServer::start(&[]);
    s.ingest(&events(0, 1));
    let r = create(
        &s,
        json!({"name": "shared", "table": "events", "start": "earliest"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let a = Consumer::start(&consume_url(&s, "shared"), 15);
    let b = Consumer::start(&consume_url(&s, "shared"), 15);
    // Both have joined once each has been assigned a part of two.
    support::wait_until(
        "both consumers have joined",
        Duration::from_secs(30),
        || {
            [&a, &b]
                .iter()
                .all(|c| c.lines().iter().any(|l| l["assigned"]["members"] == 2))
        },
    );
    let mut want = vec![1u64];
    for r in 0..10 {
        let reply = s.ingest(&events(1 + r * 30, 30));
        want.extend(
            reply["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["position"].as_u64().unwrap()),
        );
    }
    let (a, b) = (a.finish(), b.finish());
    // In the generation of two, each entity went to one consumer only,
    // its events in position order.
    // (The last generation of two: when one consumer idles out and
    // leaves, the other starts a generation alone.)
    let last_generation = |lines: &[Value]| -> Vec<(u64, String)> {
        let from = lines
            .iter()
            .rposition(|l| l["assigned"]["members"] == 2)
            .unwrap();
        let to = lines[from + 1..]
            .iter()
            .position(|l| l.get("assigned").is_some())
            .map_or(lines.len(), |i| from + 1 + i);
        delivered(&lines[from..to])
    };
    let (got_a, got_b) = (last_generation(&a), last_generation(&b));
    let entities = |got: &[(u64, String)]| -> BTreeSet<String> {
        got.iter().map(|(_, e)| e.clone()).collect()
    };
    assert!(!got_a.is_empty() && !got_b.is_empty(), "both got events");
    assert!(
        entities(&got_a).is_disjoint(&entities(&got_b)),
        "an entity went to both: {:?} and {:?}",
        entities(&got_a),
        entities(&got_b)
    );
    for got in [&got_a, &got_b] {
        let mut per_entity: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (p, e) in got.iter() {
            per_entity.entry(e).or_default().push(*p);
        }
        for (e, ps) in per_entity {
            assert!(ps.windows(2).all(|w| w[0] < w[1]), "{e}: {ps:?}");
        }
    }
    // Together, every event at least once.
    let all: BTreeSet<u64> = delivered(&a)
        .into_iter()
        .chain(delivered(&b))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(all, want.into_iter().collect());
}

#[test]
fn a_subscription_resumes_after_its_last_acknowledgement_across_kill_9() {
    let mut s = TestServer::start(&["--flush-rows", "200", "--flush-age", "100ms"]);
    s.ingest(&events(0, 3));
    let mut want: BTreeSet<u64> = acked_orders(&s.ingest(&events(3, 30)), 3)
        .into_iter()
        .collect();
    let r = create(
        &s,
        json!({"name": "orders", "table": "events", "where": ["=", "event_type", "order"],
               "start": "earliest"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let mut got: BTreeSet<u64> = BTreeSet::new();
    let mut next_event = 1000;
    let mut confirmed: Option<u64> = None;
    let kills = 10;
    // Each consumer's deliveries: in order, and resumed after the last
    // acknowledgement the server confirmed before.
    let mut take = |lines: &[Value], cycle: usize| {
        let these = delivered(lines);
        let positions: Vec<u64> = these.iter().map(|(p, _)| *p).collect();
        if let (Some(acked), Some(first)) = (confirmed, positions.first()) {
            assert!(
                *first > acked,
                "cycle {cycle}: resumed at {first}, at or before the acknowledged {acked}"
            );
        }
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "cycle {cycle}: out of order"
        );
        got.extend(positions);
        if let Some(a) = last_acked(lines) {
            confirmed = Some(confirmed.map_or(a, |c| c.max(a)));
        }
    };
    for cycle in 0..=kills {
        // Every other cycle, a consumer also goes away on its own first.
        if cycle % 2 == 1 {
            let early = Consumer::start(&consume_url(&s, "orders"), 1000);
            std::thread::sleep(Duration::from_millis(500));
            take(&early.kill(), cycle);
        }
        let consumer = Consumer::start(
            &consume_url(&s, "orders"),
            if cycle == kills { 10 } else { 1000 },
        );
        // Writers run until the server dies, keeping the acknowledged.
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (stop, ledger, base) = (stop.clone(), ledger.clone(), s.base.clone());
            let first = next_event;
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut i = first;
                while !stop.load(Ordering::Relaxed) {
                    let reply = http
                        .post(format!("{base}/v1/events"))
                        .header("content-type", "application/json")
                        .body(events(i, 20).to_string())
                        .send()
                        .and_then(|r| r.error_for_status())
                        .and_then(|r| r.json::<Value>());
                    match reply {
                        Ok(reply) => ledger.lock().unwrap().extend(acked_orders(&reply, i)),
                        Err(_) => return,
                    }
                    i += 20;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(700));
        if cycle < kills {
            s.kill9();
        } else {
            stop.store(true, Ordering::Relaxed);
        }
        writer.join().unwrap();
        next_event += 100_000;
        want.extend(ledger.lock().unwrap().iter());
        // Killed, the server ends the consumer; the last one drains what is
        // left and stops once idle.
        let lines = consumer.finish();
        take(&lines, cycle);
        if cycle < kills {
            s.restart();
        }
    }
    let missing: Vec<&u64> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged orders never delivered: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // Nothing that is not a stored order was delivered.
    let stored: BTreeSet<u64> = s
        .sql("SELECT position FROM events WHERE event_type = 'order'")
        .iter()
        .map(|r| r["position"].as_u64().unwrap())
        .collect();
    assert!(
        got.is_subset(&stored),
        "delivered events that are not stored orders"
    );
    println!(
        "{kills} kills: {} acknowledged orders, {} delivered, last confirmed ack {confirmed:?}",
        want.len(),
        got.len()
    );
}
