//! Table maintenance through `POST /v1/admin/compact` and `allsource
//! compact`: compaction next to ingest and queries, dry runs, one run per
//! table at a time, vacuum.

use crate::support::{TestServer, wait_until};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) fn parquet_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("tables/default")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && !p.to_string_lossy().contains("_delta_log")
            {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// When the default tenant's table `events` last replaced files: the
/// newest `deletionTimestamp` of the `remove` actions in its Delta log, in
/// epoch milliseconds. Vacuum counts a replaced file's age from when
/// queries stopped being handed it, a little after that (once the run
/// moved them to its commit).
pub(crate) fn last_replaced_ms(dir: &Path) -> i64 {
    let log = dir.join("tables/default/events/_delta_log");
    let mut newest = None;
    for e in std::fs::read_dir(&log).unwrap().flatten() {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        for line in std::fs::read_to_string(e.path()).unwrap().lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if let Some(at) = action["remove"]["deletionTimestamp"].as_i64() {
                newest = newest.max(Some(at));
            }
        }
    }
    newest.expect("no file was replaced")
}

pub(crate) fn epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `n` events spread over `days` days, ids `{prefix}{i}`.
fn spread(prefix: &str, n: usize, days: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "event_id": format!("{prefix}{i}"),
                    "event_type": "tick",
                    "entity_id": format!("u{}", i % 17),
                    "timestamp": format!("2026-02-{:02}T12:00:00Z", 1 + i % days),
                    "payload": {"n": i},
                })
            })
            .collect(),
    )
}

/// `rounds` requests, each flushed to files of its own (a SIGTERM flushes
/// everything): one small file per round and day.
pub(crate) fn small_files(
    s: &mut TestServer,
    prefix: &str,
    rounds: usize,
    per: usize,
    days: usize,
) {
    for round in 0..rounds {
        s.ingest(&spread(&format!("{prefix}{round}-"), per, days));
        s.stop();
        s.restart();
    }
}

/// Runs maintenance on `events` until `left` Parquet files remain, and
/// answers how many files vacuum deleted meanwhile: a run started just
/// after a replaced file's retention may still find it handed out a
/// moment too recently.
pub(crate) fn vacuum_until(s: &TestServer, left: usize) -> u64 {
    let mut deleted = 0;
    wait_until(
        &format!("vacuum leaves {left} files"),
        Duration::from_secs(30),
        || {
            let r = compact(s, "?table=events");
            deleted += r["reports"][0]["vacuumed_files"].as_u64().unwrap();
            parquet_files(&s.data_dir).len() == left
        },
    );
    deleted
}

pub(crate) fn compact(s: &TestServer, query: &str) -> Value {
    let r = s.post(&format!("/v1/admin/compact{query}"), "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A compacted file of a small partition: sorted by `entity_id`, the
/// unique-valued columns without a dictionary, a bloom filter on
/// `event_id` only, and a page index.
pub(crate) fn assert_compacted_layout(path: &str) {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let meta = builder.metadata().clone();
    let mut entities: Vec<String> = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        let col = batch.column_by_name("entity_id").unwrap();
        let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
        let col = col
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        entities.extend(col.iter().map(|v| v.unwrap().to_string()));
    }
    assert!(entities.len() > 1, "{path}");
    assert!(
        entities.is_sorted(),
        "{path} is not sorted by entity_id: {entities:?}"
    );
    for rg in meta.row_groups() {
        for c in rg.columns() {
            let name = c.column_path().string();
            if ["event_id", "entity_id", "timestamp"].contains(&name.as_str()) {
                assert!(
                    c.dictionary_page_offset().is_none(),
                    "{path}: a dictionary on {name}"
                );
            }
            if name == "event_type" {
                assert!(
                    c.dictionary_page_offset().is_some(),
                    "{path}: no dictionary on {name}"
                );
            }
            assert_eq!(
                c.bloom_filter_offset().is_some(),
                name == "event_id",
                "{path}: bloom filter on {name}"
            );
            assert!(c.offset_index_offset().is_some(), "{path}: no page index");
            assert_eq!(
                c.compression(),
                parquet::basic::Compression::LZ4_RAW,
                "{path}: {name}"
            );
        }
    }
}

#[test]
fn compaction_merges_small_files_and_keeps_every_row() {
    // Vacuum keeps replaced files for the query timeout at least: long
    // enough that the run replacing them ends first, even on a busy
    // machine.
    let query_timeout = Duration::from_secs(3);
    let mut s = TestServer::start(&[
        "--vacuum-retention",
        "0s",
        "--query-timeout",
        &humantime::format_duration(query_timeout).to_string(),
    ]);
    small_files(&mut s, "r", 6, 50, 4);
    let before = parquet_files(&s.data_dir);
    assert_eq!(before.len(), 24);
    let sum = "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, sum(n) AS total FROM events";
    let expected = s.sql(sum);

    // a dry run reports and changes nothing
    let dry = compact(&s, "?dry_run=true");
    let r = &dry["reports"][0];
    assert_eq!(r["outcome"], json!("dry run"), "{dry}");
    assert_eq!(r["partitions"], json!(4));
    assert_eq!(r["files_in"].as_u64().unwrap(), before.len() as u64);
    assert_eq!(parquet_files(&s.data_dir), before);

    let done = compact(&s, "?table=events");
    let r = &done["reports"][0];
    assert_eq!(r["outcome"], json!("done"), "{done}");
    assert_eq!(r["files_out"], json!(4), "one file per partition: {done}");
    assert_eq!(r["checkpoint"], json!(true));
    // The replaced files stay while a query may still read them...
    assert_eq!(r["vacuumed_files"], json!(0), "{done}");
    assert_eq!(parquet_files(&s.data_dir).len(), before.len() + 4);
    assert_eq!(s.sql(sum), expected);
    // ... and go once the query timeout has passed since they were
    // replaced.
    let expire_after = last_replaced_ms(&s.data_dir) + query_timeout.as_millis() as i64;
    wait_until(
        "the replaced files are older than the query timeout",
        Duration::from_secs(30),
        || epoch_ms() > expire_after,
    );
    assert_eq!(vacuum_until(&s, 4), before.len() as u64);
    assert_eq!(s.sql(sum), expected);
    for file in parquet_files(&s.data_dir) {
        assert_compacted_layout(&file);
    }

    // nothing left to do; the history keeps every run but the dry one
    // (vacuum may have taken more than one run above)
    let history = || std::fs::read_to_string(s.data_dir.join("maintenance.jsonl")).unwrap();
    let kept = history().lines().count();
    assert!(kept >= 2, "{}", history());
    let again = compact(&s, "");
    assert_eq!(
        again["reports"][0]["outcome"],
        json!("nothing to do"),
        "{again}"
    );
    assert_eq!(history().lines().count(), kept + 1, "{}", history());
    assert!(!history().contains("dry run"), "{}", history());

    // an unknown table is a 404
    let r = s.post("/v1/admin/compact?table=nope", "application/json", "");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn compaction_under_concurrent_ingest_and_queries() {
    let s = Arc::new(TestServer::start(&["--flush-age", "10ms"]));
    s.ingest(&spread("first-", 40, 6));
    let acked = Arc::new(AtomicU64::new(40));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                s.ingest(&spread(&format!("w{round}-"), 40, 6));
                acked.fetch_add(40, Ordering::SeqCst);
                round += 1;
                std::thread::sleep(std::time::Duration::from_millis(15));
            }
        })
    };
    let reader = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = 0u64;
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let floor = acked.load(Ordering::SeqCst);
                let rows =
                    s.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events");
                let n = rows[0]["n"].as_u64().unwrap();
                let ids = rows[0]["ids"].as_u64().unwrap();
                let ceiling = acked.load(Ordering::SeqCst) + 40;
                assert_eq!(n, ids, "a row was seen twice");
                assert!(
                    n >= floor && n >= last,
                    "count went down: {n} after {last}, {floor} acknowledged"
                );
                assert!(n <= ceiling, "more rows ({n}) than were sent ({ceiling})");
                last = n;
                samples += 1;
            }
            samples
        })
    };
    // At least six runs, and on until they have merged more than 20 files:
    // on a loaded machine flushes (and so files to merge) come slower.
    // Each run waits for a flush to have written files since the last one.
    let mut compacted = 0;
    let mut runs = 0;
    let mut files_seen = parquet_files(&s.data_dir).len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while runs < 6 || compacted <= 20 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "compaction merged only {compacted} files in {runs} runs"
        );
        wait_until("a flush writes new files", left, || {
            parquet_files(&s.data_dir).len() > files_seen
        });
        let out = compact(&s, "");
        files_seen = parquet_files(&s.data_dir).len();
        let outcome = out["reports"][0]["outcome"].as_str().unwrap().to_string();
        assert!(!outcome.starts_with("failed"), "{out}");
        compacted += out["reports"][0]["files_in"].as_u64().unwrap();
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let samples = reader.join().unwrap();
    assert!(samples > 10, "only {samples} query samples");
    let total = acked.load(Ordering::SeqCst);
    let rows = s.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM events");
    assert_eq!(rows[0]["n"], json!(total));
    assert_eq!(rows[0]["ids"], json!(total));
}

#[test]
fn one_compaction_per_table_at_a_time() {
    let mut s = TestServer::start(&[]);
    small_files(&mut s, "b", 3, 84, 28);
    // follow the first run's progress; while it is midway, ask again
    let client = reqwest::blocking::Client::new();
    let first = client
        .post(s.url("/v1/admin/compact?progress=true"))
        .send()
        .unwrap();
    assert_eq!(first.status(), 200);
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(first).lines();
    let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let p = &line["progress"];
    assert_eq!(p["partitions_done"], json!(1), "{line}");
    assert_eq!(p["partitions_total"], json!(28), "{line}");
    let second = s.post("/v1/admin/compact?table=events", "application/json", "");
    assert_eq!(second.status, 409, "{}", second.text());
    assert!(
        second.error().contains("already being compacted"),
        "{}",
        second.error()
    );
    let last: Value = serde_json::from_str(&lines.last().unwrap().unwrap()).unwrap();
    assert_eq!(last["reports"][0]["outcome"], json!("done"), "{last}");
}

#[test]
fn the_cli_shows_progress_and_reports() {
    let mut s = TestServer::start(&[]);
    small_files(&mut s, "c", 3, 30, 3);
    let bin = crate::support::server_bin();
    let dry = std::process::Command::new(&bin)
        .args(["compact", "--dry-run", "--url", &s.base])
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.starts_with("events: dry run — 3 partition(s)"),
        "{text}"
    );
    let run = std::process::Command::new(&bin)
        .args(["compact", "--table", "events", "--url", &s.base])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.starts_with("events: done — 3 partition(s)"), "{text}");
    assert!(text.contains("→ 3 files"), "{text}");
    let bar = String::from_utf8_lossy(&run.stderr);
    assert!(bar.contains("3/3 partitions"), "{bar}");
    let bad = std::process::Command::new(bin)
        .args(["compact", "--table", "nope", "--url", &s.base])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no table nope"));
}

#[test]
fn a_compaction_killed_midway_leaves_the_table_whole_and_the_next_run_finishes() {
    let mut s = TestServer::start(&[]);
    small_files(&mut s, "k", 3, 84, 28);
    let sum = "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, sum(n) AS total FROM events";
    let expected = s.sql(sum);
    let response = reqwest::blocking::Client::new()
        .post(s.url("/v1/admin/compact?progress=true"))
        .send()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(response).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["progress"]["partitions_done"], json!(1), "{first}");
    s.kill9();
    s.restart();
    assert_eq!(
        s.sql(sum),
        expected,
        "rows changed after a kill during compaction"
    );
    let next = compact(&s, "");
    let r = &next["reports"][0];
    assert_eq!(r["outcome"], json!("done"), "{next}");
    let left = r["partitions"].as_u64().unwrap();
    assert!(
        (1..28).contains(&left),
        "the next run should finish the rest: {next}"
    );
    assert_eq!(s.sql(sum), expected);
    let dry = compact(&s, "?dry_run=true");
    assert_eq!(
        dry["reports"][0]["outcome"],
        json!("nothing to do"),
        "{dry}"
    );
}

#[test]
fn retention_removes_exactly_the_old_rows() {
    let mut s = TestServer::start(&["--retention", "30days"]);
    let now = chrono::Utc::now();
    let at = |days: i64, minutes: i64| {
        (now - chrono::Duration::days(days) + chrono::Duration::minutes(minutes)).to_rfc3339()
    };
    let events: Vec<Value> = [
        ("old-1", at(45, 0)),
        ("old-2", at(30, -5)),
        ("new-1", at(30, 60)),
        ("new-2", at(2, 0)),
    ]
    .iter()
    .map(|(id, ts)| json!({"event_id": id, "event_type": "t", "entity_id": "u", "timestamp": ts}))
    .collect();
    s.ingest(&Value::Array(events));
    s.stop();
    s.restart();
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(4));
    let out = compact(&s, "");
    assert!(
        out["reports"][0]["retention_files_removed"]
            .as_u64()
            .unwrap()
            >= 1,
        "{out}"
    );
    let left = s.sql("SELECT event_id FROM events ORDER BY event_id");
    assert_eq!(
        left,
        vec![json!({"event_id": "new-1"}), json!({"event_id": "new-2"})]
    );
}

#[test]
fn system_tables_show_files_and_compactions() {
    let mut s = TestServer::start(&[]);
    small_files(&mut s, "s", 3, 20, 2);
    let t = s.sql("SELECT table_name, files, rows, partitions, last_compaction FROM system.tables");
    assert_eq!(
        t,
        vec![
            json!({"table_name": "events", "files": 6, "rows": 60, "partitions": 2, "last_compaction": null})
        ]
    );
    let per_partition = s.sql(
        "SELECT partition, count(*) AS files, sum(rows) AS rows FROM system.files GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        per_partition,
        vec![
            json!({"partition": "2026-02-01", "files": 3, "rows": 30}),
            json!({"partition": "2026-02-02", "files": 3, "rows": 30}),
        ]
    );
    compact(&s, "");
    let t = s.sql("SELECT files, rows, last_compaction IS NOT NULL AS done FROM system.tables");
    assert_eq!(t, vec![json!({"files": 2, "rows": 60, "done": true})]);
    let runs = s
        .sql("SELECT table_name, files_in, files_out, checkpoint, outcome FROM system.compactions");
    assert_eq!(
        runs,
        vec![
            json!({"table_name": "events", "files_in": 6, "files_out": 2, "checkpoint": true, "outcome": "done"})
        ]
    );
    // the history survives a restart
    s.stop();
    s.restart();
    assert_eq!(
        s.scalar("SELECT count(*) FROM system.compactions"),
        json!(1)
    );
}

#[test]
fn per_table_settings_override_the_flags_and_persist() {
    let mut s = TestServer::start(&["--maintenance-interval", "0s"]);
    let now = chrono::Utc::now();
    let at = |days: i64| (now - chrono::Duration::days(days)).to_rfc3339();
    let events: Vec<Value> = [("a", at(20)), ("b", at(5)), ("c", at(1))]
        .iter()
        .map(|(id, ts)| json!({"event_id": id, "event_type": "t", "entity_id": "u", "timestamp": ts}))
        .collect();
    s.ingest(&Value::Array(events));
    s.stop();
    s.restart();
    let put = |s: &TestServer, body: &str| {
        let r = s.client_put("/v1/admin/tables/events/settings", body);
        (r.0, serde_json::from_str::<Value>(&r.1).unwrap())
    };
    let (status, reply) = put(
        &s,
        r#"{"retention": "10days", "maintenance_interval": "1s"}"#,
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["effective"]["retention"], json!("10days"));
    // the table's own schedule runs although the server's is off
    wait_until("the table's schedule runs", Duration::from_secs(20), || {
        s.scalar("SELECT count(*) FROM system.compactions") != json!(0)
    });
    let left = s.sql("SELECT event_id FROM events ORDER BY event_id");
    assert_eq!(
        left,
        vec![json!({"event_id": "b"}), json!({"event_id": "c"})]
    );
    // bad values name the field; unknown fields and tables are refused
    let (status, reply) = put(&s, r#"{"retention": "ten days"}"#);
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("retention: \"ten days\" is not a duration"),
        "{reply}"
    );
    let (status, reply) = put(&s, r#"{"retain": "1d"}"#);
    assert_eq!(status, 400);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `retain`"),
        "{reply}"
    );
    let r = s.client_put("/v1/admin/tables/nope/settings", "{}");
    assert_eq!(r.0, 404);
    // kept across restarts
    s.stop();
    s.restart();
    let r = s.client_get("/v1/admin/tables/events/settings");
    let v: Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        v["settings"],
        json!({"retention": "10days", "maintenance_interval": "1s"})
    );
}

/// The active files' row counts, largest first.
fn file_rows(s: &TestServer) -> Vec<u64> {
    s.sql("SELECT rows FROM system.files ORDER BY rows DESC")
        .iter()
        .map(|r| r["rows"].as_u64().unwrap())
        .collect()
}

/// A scheduled run leaves a partition's largest small file alone while the
/// newer files together are smaller than it, and merges it with them once
/// they match it; a requested run merges every small file.
#[test]
fn scheduled_compaction_rewrites_a_large_file_only_once_newer_files_match_it() {
    let mut s = TestServer::start(&["--maintenance-interval", "0s"]);
    small_files(&mut s, "big", 1, 3000, 1);
    small_files(&mut s, "new", 3, 10, 1);
    assert_eq!(file_rows(&s), [3000, 10, 10, 10]);
    let dry = compact(&s, "?dry_run=true");
    assert_eq!(dry["reports"][0]["files_in"], json!(4), "{dry}");

    let r = s.client_put(
        "/v1/admin/tables/events/settings",
        r#"{"maintenance_interval": "1s"}"#,
    );
    assert_eq!(r.0, 200, "{}", r.1);
    // A run is recorded once it has ended, after its commit is visible.
    let merged = "SELECT files_in FROM system.compactions WHERE files_in > 0";
    wait_until(
        "the three new files are merged and the run recorded",
        Duration::from_secs(30),
        || file_rows(&s) == [3000, 30] && !s.sql(merged).is_empty(),
    );
    let runs = s.sql(merged);
    assert_eq!(runs, vec![json!({"files_in": 3})]);

    // Two larger flushes: together with the small file they outweigh the
    // large one, and all four are merged.
    small_files(&mut s, "more", 2, 2000, 1);
    wait_until("everything is merged", Duration::from_secs(30), || {
        file_rows(&s) == [7030]
    });
    assert_eq!(
        s.scalar("SELECT count(DISTINCT event_id) FROM events"),
        7030
    );
    // The file's statistics bound every row: a bound rounded the wrong
    // way would prune the file.
    assert_eq!(
        s.scalar(
            "SELECT count(*) FROM events WHERE ingested_at <= (SELECT max(ingested_at) FROM events) \
             AND ingested_at >= (SELECT min(ingested_at) FROM events)"
        ),
        7030
    );
    // The partition is still receiving files: its merges concatenate it,
    // by copying each flush's row groups as they are.
    let path = s.scalar("SELECT path FROM system.files");
    let path = s
        .data_dir
        .join("tables/default/events")
        .join(path.as_str().unwrap());
    let file = std::fs::File::open(&path).unwrap();
    let meta = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .metadata()
        .clone();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups.iter().sum::<i64>(), 7030, "{path:?}");
    assert!(groups.len() > 1, "{path:?}: {groups:?}");
}

/// A query streaming a large result reads its files one after another.
/// Compaction replaces them all and vacuum runs twice while it is paused
/// midway: vacuum keeps replaced files for at least the query timeout, so
/// the query finishes with every row.
#[test]
fn vacuum_during_a_long_query_leaves_its_files() {
    use std::io::Read;
    let s = TestServer::start(&[
        "--vacuum-retention",
        "0s",
        "--query-timeout",
        "60s",
        "--flush-rows",
        "4000",
    ]);
    // Each round flushed before the next, so the table has many files
    // however busy the machine is.
    for round in 0..30 {
        s.ingest(&spread(&format!("v{round}-"), 4000, 1));
        wait_until("the round is flushed", Duration::from_secs(60), || {
            s.scalar("SELECT buffered_rows FROM system.tables WHERE table_name = 'events'")
                == json!(0)
        });
    }
    let files = parquet_files(&s.data_dir);
    assert!(files.len() >= 8, "{} files", files.len());

    // About 50 MB of CSV: far more than the socket buffers hold, so the
    // scan waits for this client between files.
    let client = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap();
    let mut response = client
        .post(s.url("/v1/sql?format=csv"))
        .body("SELECT event_id, repeat(entity_id, 100) AS wide FROM events")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut head = vec![0u8; 1 << 16];
    response.read_exact(&mut head).unwrap();

    let done = compact(&s, "?table=events");
    let r = &done["reports"][0];
    assert_eq!(r["outcome"], json!("done"), "{done}");
    assert_eq!(r["files_in"].as_u64().unwrap(), files.len() as u64);
    assert_eq!(r["vacuumed_files"], json!(0), "{done}");
    let again = compact(&s, "?table=events");
    assert_eq!(again["reports"][0]["vacuumed_files"], json!(0), "{again}");
    // Every old file is still there for the paused query.
    let on_disk = parquet_files(&s.data_dir);
    assert!(files.iter().all(|f| on_disk.contains(f)));

    let mut rest = Vec::new();
    response.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    let text = String::from_utf8(head).unwrap();
    let ids: std::collections::HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(text.lines().count(), 120_001);
    assert_eq!(ids.len(), 120_000);
    // New queries read the compacted file.
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(120_000));
}
