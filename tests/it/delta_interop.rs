//! The tables are real Delta Lake: the Python `deltalake` package, Polars
//! and DuckDB read the same rows that AllSource's SQL returns, through the
//! Delta log, also after compaction, retention and vacuum.

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

/// The Python with the readers of `tests/python/readers-requirements.txt`:
/// `ALLSOURCE_READERS_PYTHON` (set by scripts/test.sh), else `python3`.
fn readers_python() -> String {
    std::env::var("ALLSOURCE_READERS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The table's rows as Polars and DuckDB read them through its Delta log
/// equal what AllSource's SQL returns.
fn external_readers_agree(s: &TestServer, stage: &str) -> usize {
    let ours: Vec<Value> = s
        .sql("SELECT event_id, entity_id, amount, CAST(event_date AS VARCHAR) AS d FROM events ORDER BY event_id")
        .into_iter()
        .map(|r| json!([r["event_id"], r["entity_id"], r["amount"], r["d"]]))
        .collect();
    let out = Command::new(readers_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/external_readers.py"
        ))
        .arg(s.data_dir.join("tables/default/events"))
        .output()
        .expect("run the readers' python (scripts/test.sh sets ALLSOURCE_READERS_PYTHON)");
    assert!(
        out.status.success(),
        "{stage}: external readers failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    for engine in ["polars", "duckdb"] {
        assert_eq!(
            theirs[engine],
            Value::Array(ours.clone()),
            "{stage}: {engine} reads other rows than AllSource"
        );
    }
    ours.len()
}

#[test]
fn polars_and_duckdb_read_the_delta_log_through_compaction_retention_and_vacuum() {
    use crate::compaction::{compact, epoch_ms, last_replaced_ms, parquet_files};
    let query_timeout = std::time::Duration::from_secs(2);
    let mut s = TestServer::start(&[
        "--vacuum-retention",
        "0s",
        "--query-timeout",
        &humantime::format_duration(query_timeout).to_string(),
    ]);
    // Three flushes over four days, one of them 45 days ago; from noon,
    // so each day's events stay on that day.
    let noon = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    for round in 0..3 {
        let events: Vec<Value> = (0..40i64)
            .map(|i| {
                let days = [45, 3, 2, 1][i as usize % 4];
                let at = noon - chrono::Duration::days(days) + chrono::Duration::minutes(i);
                json!({"event_id": format!("r{round}-{i:02}"), "event_type": "buy",
                       "entity_id": format!("u{}", i % 5), "timestamp": at.to_rfc3339(),
                       "payload": {"amount": i as f64 + 0.5}})
            })
            .collect();
        s.ingest(&Value::Array(events));
        s.stop();
        s.restart();
    }
    assert_eq!(parquet_files(&s.data_dir).len(), 12);
    assert_eq!(external_readers_agree(&s, "flushed"), 120);

    // Compacted: the replaced files are still on disk, the log no longer
    // lists them.
    let done = compact(&s, "?table=events");
    assert_eq!(done["reports"][0]["outcome"], "done", "{done}");
    assert_eq!(parquet_files(&s.data_dir).len(), 12 + 4);
    assert_eq!(external_readers_agree(&s, "compacted"), 120);

    // Retention removes the day 45 days ago.
    let r = s.client_put(
        "/v1/admin/tables/events/settings",
        r#"{"retention": "30days"}"#,
    );
    assert_eq!(r.0, 200, "{}", r.1);
    let retained = compact(&s, "?table=events");
    assert!(
        retained["reports"][0]["retention_files_removed"]
            .as_u64()
            .unwrap()
            >= 1,
        "{retained}"
    );
    assert_eq!(external_readers_agree(&s, "after retention"), 90);

    // Vacuum deletes what the log removed, once the query timeout passed.
    let expire_after = last_replaced_ms(&s.data_dir) + query_timeout.as_millis() as i64;
    crate::support::wait_until(
        "the replaced files are older than the query timeout",
        std::time::Duration::from_secs(30),
        || epoch_ms() > expire_after,
    );
    // Only the live files are left: one per remaining day.
    assert!(crate::compaction::vacuum_until(&s, 3) >= 1);
    assert_eq!(external_readers_agree(&s, "after vacuum"), 90);
}
