//! The tables are real Delta Lake: the Python `deltalake` package reads
//! the same rows that AllSource's SQL returns.

use crate::support::{TestServer, python};
use serde_json::{Value, json};
use std::process::Command;

#[test]
fn python_deltalake_reads_the_same_rows() {
    let mut s = TestServer::start(&[]);
    let evs: Vec<Value> = (0..50)
        .map(|i| {
            json!({
                "event_id": format!("e{i:03}"),
                "event_type": if i % 2 == 0 { "buy" } else { "view" },
                "entity_id": format!("u{}", i % 7),
                "timestamp": format!("2026-03-{:02}T10:00:00Z", 1 + i % 3),
                "payload": {"amount": i as f64 * 1.5, "ok": i % 3 == 0},
            })
        })
        .collect();
    s.ingest(&Value::Array(evs[..30].to_vec()));
    s.stop();
    s.restart();
    // a second commit, with a new column
    let mut late = evs[30..].to_vec();
    late[0]["payload"]["coupon"] = json!("X");
    s.ingest(&Value::Array(late));
    let ours = s.sql(
        "SELECT event_id, event_type, entity_id, amount, ok, coupon, CAST(event_date AS VARCHAR) AS event_date FROM events ORDER BY event_id",
    );
    s.stop();

    let table_dir = s.data_dir.join("tables/default/events");
    let out = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/read_delta.py"
        ))
        .arg(&table_dir)
        .output()
        .expect("run python (set ALLSOURCE_TEST_PYTHON to a Python with deltalake installed)");
    assert!(
        out.status.success(),
        "python deltalake failed (is it installed? scripts/test.sh sets up a virtualenv):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let meta: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(meta["partition_columns"], json!(["event_date"]));
    let theirs: Vec<Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(theirs.len(), ours.len());
    for (a, b) in ours.iter().zip(&theirs) {
        for col in [
            "event_id",
            "event_type",
            "entity_id",
            "amount",
            "ok",
            "coupon",
            "event_date",
        ] {
            assert_eq!(a[col], b[col], "column {col}: ours {a} theirs {b}");
        }
    }
}
