//! Event-store order: every event's position in its table and version in
//! its entity's stream, optimistic concurrency on `expected_version`, and
//! retries answered with the original numbers.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

fn post(s: &TestServer, events: &Value) -> (u16, Value) {
    let r = s.post("/v1/events", "application/json", events.to_string());
    (r.status, r.json())
}

/// The (position, version) of each event of an ingest reply.
fn stamps(reply: &Value) -> Vec<(u64, u64)> {
    reply["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {reply}"))
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// (position, version) per event id, as stored.
fn stored(s: &TestServer) -> HashMap<String, (u64, u64)> {
    s.sql("SELECT event_id, position, version FROM events")
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                (
                    r["position"].as_u64().unwrap(),
                    r["version"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

fn event(id: &str, entity: &str) -> Value {
    json!({"event_id": id, "event_type": "t", "entity_id": entity})
}

#[test]
fn positions_and_versions_run_on_across_flushes_and_kills() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    let first = s.ingest(&json!([
        event("a1", "a"),
        event("b1", "b"),
        event("a2", "a")
    ]));
    assert_eq!(stamps(&first), vec![(1, 1), (2, 1), (3, 2)]);
    assert_eq!(
        (
            first["first_position"].clone(),
            first["last_position"].clone()
        ),
        (json!(1), json!(3))
    );
    // Buffered rows carry their stamps; so do flushed ones, and replayed.
    let mut expected: HashMap<String, (u64, u64)> =
        [("a1", (1, 1)), ("b1", (2, 1)), ("a2", (3, 2))]
            .map(|(k, v)| (k.to_string(), v))
            .into();
    assert_eq!(stored(&s), expected);
    s.kill9();
    s.restart();
    assert_eq!(stored(&s), expected, "after replaying the WAL");
    let next = s.ingest(&json!([event("a3", "a")]));
    assert_eq!(stamps(&next), vec![(4, 3)]);
    expected.insert("a3".into(), (4, 3));
    s.stop();
    s.restart();
    assert_eq!(stored(&s), expected, "after a clean stop (flushed)");
    s.kill9();
    s.restart();
    let last = s.ingest(&json!([event("b2", "b"), event("c1", "c")]));
    assert_eq!(
        stamps(&last),
        vec![(5, 2), (6, 1)],
        "numbering resumes from storage"
    );
    let r = s.post(
        "/v1/events?reply=counts",
        "application/json",
        json!([event("c2", "c")]).to_string(),
    );
    assert_eq!(r.status, 200);
    let counts = r.json();
    assert_eq!(counts["first_position"], 7);
    assert!(counts.get("events").is_none(), "{counts}");
}

#[test]
fn a_stale_expected_version_refuses_the_whole_request_with_409() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([event("x1", "acct-1"), event("x2", "acct-1")]));
    let stale = json!([
        {"event_id": "n1", "event_type": "t", "entity_id": "acct-2", "expected_version": "no_stream"},
        {"event_id": "n2", "event_type": "t", "entity_id": "acct-1", "expected_version": 1},
    ]);
    let (status, body) = post(&s, &stale);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["details"]["entity_id"], "acct-1");
    assert_eq!(body["details"]["expected_version"], 1);
    assert_eq!(body["details"]["current_version"], 2);
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("acct-1") && msg.contains("version 2") && msg.contains("expected 1"),
        "{msg}"
    );
    assert_eq!(
        s.scalar("SELECT count(*) FROM events"),
        2,
        "nothing of it stored"
    );
    // The refused ids are free: the corrected request is stored.
    let fixed = json!([
        {"event_id": "n1", "event_type": "t", "entity_id": "acct-2", "expected_version": "no_stream"},
        {"event_id": "n2", "event_type": "t", "entity_id": "acct-1", "expected_version": 2},
        {"event_id": "n3", "event_type": "t", "entity_id": "acct-1", "expected_version": 3},
        {"event_id": "n4", "event_type": "t", "entity_id": "acct-1", "expected_version": "any"},
    ]);
    let (status, body) = post(&s, &fixed);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stamps(&body).iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![1, 3, 4, 5]
    );
    let (status, body) = post(
        &s,
        &json!([{"event_type": "t", "entity_id": "acct-2", "expected_version": "no_stream"}]),
    );
    assert_eq!(
        (status, body["details"]["current_version"].clone()),
        (409, json!(1))
    );
}

#[test]
fn malformed_expected_versions_get_400_naming_the_event() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([event("seed", "a")]));
    for bad in [json!(-1), json!("latest"), json!(1.5), json!([1])] {
        let (status, body) = post(
            &s,
            &json!([event("ok", "a"), {"event_type": "t", "entity_id": "a", "expected_version": bad}]),
        );
        assert_eq!(status, 400, "{bad}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(
            msg.starts_with("event 1: field \"expected_version\""),
            "{bad}: {msg}"
        );
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), 1);
}

#[test]
fn of_racing_appends_with_one_expected_version_exactly_one_wins() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([event("seed", "order-7")]));
    for round in 0..5u64 {
        let racers = 8;
        let barrier = Arc::new(Barrier::new(racers));
        let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..racers)
                .map(|i| {
                    let (barrier, s) = (barrier.clone(), &s);
                    scope.spawn(move || {
                        let body = json!([{"event_id": format!("r{round}-{i}"), "event_type": "t",
                            "entity_id": "order-7", "expected_version": round + 1}]);
                        barrier.wait();
                        post(s, &body)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = results.iter().filter(|(st, _)| *st == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(stamps(&winners[0].1)[0].1, round + 2);
        assert!(
            results.iter().all(|(st, _)| *st == 200 || *st == 409),
            "{results:?}"
        );
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), 6);
}

#[test]
fn versions_stay_gapless_under_eight_concurrent_writers() {
    let s = TestServer::start(&["--flush-rows", "500"]);
    let acked: Vec<Vec<(String, (u64, u64))>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|w| {
                let s = &s;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for r in 0..40 {
                        let ids: Vec<String> = (0..10).map(|i| format!("w{w}-r{r}-{i}")).collect();
                        let body: Vec<Value> = ids
                            .iter()
                            .enumerate()
                            .map(|(i, id)| event(id, &format!("e{}", (w + r + i) % 6)))
                            .collect();
                        let reply = s.ingest(&Value::Array(body));
                        mine.extend(ids.into_iter().zip(stamps(&reply)));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let got = stored(&s);
    assert_eq!(got.len(), 8 * 40 * 10);
    for (id, stamp) in acked.iter().flatten() {
        assert_eq!(
            got[id], *stamp,
            "{id} is stored with other numbers than acknowledged"
        );
    }
    let mut per_entity: HashMap<String, Vec<u64>> = HashMap::new();
    for r in s.sql("SELECT entity_id, version FROM events") {
        per_entity
            .entry(r["entity_id"].as_str().unwrap().into())
            .or_default()
            .push(r["version"].as_u64().unwrap());
    }
    for (entity, mut versions) in per_entity {
        versions.sort_unstable();
        let want: Vec<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(versions, want, "entity {entity}");
    }
    let mut positions: Vec<u64> = got.values().map(|s| s.0).collect();
    positions.sort_unstable();
    assert_eq!(
        positions,
        (1..=3200).collect::<Vec<u64>>(),
        "positions are gapless here"
    );
}

#[test]
fn a_retry_gets_the_original_positions_and_versions() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    let body = json!([event("p1", "a"), event("p2", "b"), event("p3", "a")]);
    let original = s.ingest(&body);
    s.ingest(&json!([event("q1", "a")]));
    let retry = s.ingest(&body);
    assert_eq!(retry["duplicates"], 3);
    assert_eq!(stamps(&retry), stamps(&original));
    assert_eq!(retry["first_position"], original["first_position"]);
    assert_eq!(retry["last_position"], original["last_position"]);
    // A retry mixed with a new event: the new one is numbered after.
    let mixed = s.ingest(&json!([event("p2", "b"), event("q2", "b")]));
    assert_eq!(stamps(&mixed), vec![(2, 1), (5, 2)]);
    // The expected version of a retried event is not checked again: it
    // was checked when the original was stored.
    let guarded = json!([{"event_id": "g1", "event_type": "t", "entity_id": "c", "expected_version": "no_stream"}]);
    let first = s.ingest(&guarded);
    assert_eq!(stamps(&s.ingest(&guarded)), stamps(&first));
    // The numbers are remembered across a kill (replayed WAL) and a clean
    // stop (read back from storage).
    s.kill9();
    s.restart();
    assert_eq!(stamps(&s.ingest(&body)), stamps(&original));
    s.stop();
    s.restart();
    assert_eq!(stamps(&s.ingest(&body)), stamps(&original));
    assert_eq!(stamps(&s.ingest(&guarded)), stamps(&first));
}

#[test]
fn flight_ingest_checks_an_expected_version_column() {
    use crate::flight::{blocking, connect, create_append, expect_code, ingest, runtime};
    use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use tonic::Code;
    let s = TestServer::start(&[]);
    let batch = |ids: &[&str], entities: &[&str], expected: ArrayRef| {
        RecordBatch::try_from_iter(vec![
            (
                "event_id",
                Arc::new(StringArray::from(ids.to_vec())) as ArrayRef,
            ),
            (
                "event_type",
                Arc::new(StringArray::from(vec!["t"; ids.len()])) as ArrayRef,
            ),
            (
                "entity_id",
                Arc::new(StringArray::from(entities.to_vec())) as ArrayRef,
            ),
            ("expected_version", expected),
        ])
        .unwrap()
    };
    let ints = |v: Vec<Option<i64>>| Arc::new(Int64Array::from(v)) as ArrayRef;
    let texts = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
    runtime().block_on(async {
        let client = connect(&s).await;
        let put = |b: RecordBatch| {
            let mut client = client.clone();
            async move { ingest(&mut client, create_append("events"), vec![b]).await }
        };
        let first = batch(
            &["f1", "f2"],
            &["acct-1", "acct-1"],
            ints(vec![Some(0), Some(1)]),
        );
        assert_eq!(put(first.clone()).await.unwrap(), 2);
        // Stale: acct-1 is at version 2. Nothing of the batch is stored.
        let stale = batch(
            &["f3", "f4"],
            &["acct-2", "acct-1"],
            ints(vec![None, Some(1)]),
        );
        expect_code(
            put(stale).await,
            Code::Aborted,
            "entity \"acct-1\" is at version 2, but the event at index 1 expected 1",
            "stale expected version",
        );
        // A retry of stored events is not checked again.
        assert_eq!(put(first).await.unwrap(), 0);
        // Text: a version, "any" or "no_stream"; null is "any".
        let texts_ok = batch(
            &["f5", "f6", "f7", "f8"],
            &["acct-1", "acct-1", "acct-2", "acct-2"],
            texts(vec![Some("2"), Some("any"), Some("no_stream"), None]),
        );
        assert_eq!(put(texts_ok).await.unwrap(), 4);
        for (bad, needle) in [
            (texts(vec![Some("maybe")]), "found \"maybe\""),
            (ints(vec![Some(-1)]), "found -1"),
            (
                Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
                "must be an integer column",
            ),
        ] {
            expect_code(
                put(batch(&["bad"], &["acct-3"], bad)).await,
                Code::InvalidArgument,
                needle,
                needle,
            );
        }
        drop(client);
    });
    let stored =
        blocking(|| s.sql("SELECT event_id, entity_id, version FROM events ORDER BY position"));
    let got: Vec<(String, String, u64)> = stored
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().into(),
                r["entity_id"].as_str().unwrap().into(),
                r["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("f1", "acct-1", 1),
        ("f2", "acct-1", 2),
        ("f5", "acct-1", 3),
        ("f6", "acct-1", 4),
        ("f7", "acct-2", 1),
        ("f8", "acct-2", 2),
    ];
    let want: Vec<(String, String, u64)> = want
        .iter()
        .map(|(i, e, v)| (i.to_string(), e.to_string(), *v))
        .collect();
    assert_eq!(got, want);
}
