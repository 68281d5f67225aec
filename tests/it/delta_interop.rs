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
    // a second commit, with a new column (deltalake's writer adds it)
    let mut late = evs[30..40].to_vec();
    late[0]["payload"]["coupon"] = json!("X");
    s.ingest(&Value::Array(late));
    s.stop();
    s.restart();
    // a third, with the same columns over three dates: written by the
    // flush's own per-date writers
    s.ingest(&Value::Array(evs[40..].to_vec()));
    let ours = s.sql(
        "SELECT event_id, event_type, entity_id, amount, ok, coupon, CAST(event_date AS VARCHAR) AS event_date FROM events ORDER BY event_id",
    );
    s.stop();

    let table_dir = s.data_dir.join("tables/default/events");
    // The third commit came from the flush's own writers, not deltalake's
    // WriteBuilder (which records operationMetrics): this test covers both.
    let log = |v: u32| {
        std::fs::read_to_string(table_dir.join(format!("_delta_log/{v:020}.json"))).unwrap()
    };
    assert!(log(1).contains("operationMetrics"));
    assert!(!log(2).contains("operationMetrics"), "{}", log(2));
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
    assert_eq!(meta["version"], json!(2), "{meta}");
    // Every file carries its partition, row count and timestamp bounds,
    // which other engines (and our own scan) prune with.
    let files = meta["files"].as_array().unwrap();
    let mut per_date = std::collections::BTreeMap::<String, u64>::new();
    for f in files {
        let date = f["event_date"].as_str().unwrap();
        assert!(
            f["path"]
                .as_str()
                .unwrap()
                .starts_with(&format!("event_date={date}/")),
            "{f}"
        );
        assert!(
            f["min_timestamp"].as_str().unwrap().starts_with(date),
            "{f}"
        );
        assert!(
            f["max_timestamp"].as_str().unwrap().starts_with(date),
            "{f}"
        );
        *per_date.entry(date.to_string()).or_default() += f["num_records"].as_u64().unwrap();
    }
    // three commits, each one file per date it holds
    assert_eq!(files.len(), 9, "{meta}");
    assert_eq!(
        per_date.into_iter().collect::<Vec<_>>(),
        vec![
            ("2026-03-01".to_string(), 17),
            ("2026-03-02".to_string(), 17),
            ("2026-03-03".to_string(), 16)
        ]
    );
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
