//! `allsource import`: every file format into a table over Flight, bad
//! rows reported with their file and line while the rest is stored, and
//! an import killed half-way resumed without storing a row twice.

use crate::support::{TestServer, hs_server, run_with_input, server_bin, token, wait_until};
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn import(s: &TestServer, args: &[&str], state: &Path) -> Command {
    let mut c = Command::new(server_bin());
    c.arg("import")
        .args(args)
        .args(["--flight-url", &s.flight])
        .arg("--state")
        .arg(state);
    c
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

fn parquet_file(path: &Path) {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "event_type",
            Arc::new(StringArray::from(vec!["buy", "view"])),
        ),
        ("entity_id", Arc::new(StringArray::from(vec!["p1", "p2"]))),
        (
            "timestamp",
            Arc::new(TimestampMillisecondArray::from(vec![
                1_767_225_600_000,
                1_767_225_601_000,
            ])),
        ),
        ("amount", Arc::new(Float64Array::from(vec![40.0, 2.0]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn every_format_is_imported_and_bad_rows_are_reported_with_their_line() {
    let s = TestServer::start(&[]);
    // Purchases above 100 are refused by the server, row by row.
    let r = s.post(
        "/v1/schemas/imp/buy",
        "application/json",
        json!({"mode": "reject", "fields": {"amount": {"type": "number", "max": 100}}}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // NDJSON: line 3 is not JSON, line 5 breaks the server's rule.
    write(
        &data.join("a.ndjson"),
        b"{\"event_type\":\"buy\",\"entity_id\":\"n1\",\"payload\":{\"amount\":10}}\n\
          {\"event_type\":\"view\",\"entity_id\":\"n2\",\"event_id\":\"own-1\"}\n\
          {\"event_type\":\"buy\", oops}\n\
          \n\
          {\"event_type\":\"buy\",\"entity_id\":\"n3\",\"payload\":{\"amount\":500}}\n\
          {\"event_type\":\"buy\",\"entity_id\":\"n4\",\"timestamp\":\"2026-01-02T00:00:00Z\",\"payload\":{\"amount\":1,\"tags\":[\"a\"]}}\n",
    );
    // A JSON array, pretty-printed and gzipped: the element on line 6 has
    // no entity.
    let array = "[\n  {\"event_type\": \"view\",\n   \"entity_id\": \"j1\"},\n  {\"event_type\": \"buy\", \"entity_id\": \"j2\", \"payload\": {\"amount\": 3}},\n\n  {\"event_type\": \"view\"}\n]\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(array.as_bytes()).unwrap();
    write(&data.join("b.json.gz"), &gz.finish().unwrap());
    // CSV, zstd: line 3 has a field too few.
    let csv = "event_type,entity_id,amount,note\nbuy,c1,7,first\nbuy,c2,8\nview,c3,,\n";
    write(
        &data.join("c.csv.zst"),
        &zstd::encode_all(csv.as_bytes(), 3).unwrap(),
    );
    parquet_file(&data.join("d.parquet"));
    // Not an input: no format in its name.
    write(&data.join("notes.txt"), b"ignored");

    let state = dir.path().join("state.json");
    let rejected = dir.path().join("rejected.ndjson");
    let rejected_arg = format!("--rejected={}", rejected.display());
    let mut c = import(&s, &["--table", "imp", &rejected_arg], &state);
    c.arg(&data);
    let (ok, out, err) = run_with_input(&mut c, "");
    assert!(
        !ok,
        "rows were rejected, so the status is not 0: {out}{err}"
    );
    assert!(
        out.contains("imported 4 of 4 files into imp: 9 events stored, 4 rows rejected"),
        "{out}{err}"
    );
    for expected in [
        "a.ndjson line 3: ",
        "a.ndjson line 5: rule amount.max at $[",
        "b.json.gz line 6: field \"entity_id\" is required",
        "c.csv.zst line 3: the row has 3 fields; the header has 4",
    ] {
        assert!(out.contains(expected), "{expected:?} in {out}");
    }
    let listed: Vec<serde_json::Value> = std::fs::read_to_string(&rejected)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 4);
    assert!(
        listed
            .iter()
            .any(|r| r["line"] == 5 && r["file"].as_str().unwrap().ends_with("a.ndjson"))
    );

    let rows = s.sql("SELECT entity_id, event_type, amount, event_id FROM imp ORDER BY entity_id");
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c3", "j1", "j2", "n1", "n2", "n4", "p1", "p2"]);
    assert_eq!(rows[0]["amount"], 7.0);
    assert_eq!(rows[7]["amount"], 40.0);
    assert_eq!(rows[5]["event_id"], "own-1");
    assert_eq!(
        s.scalar("SELECT CAST(date_part('epoch', timestamp) AS BIGINT) AS t FROM imp WHERE entity_id = 'n4'"),
        1_767_312_000
    );
    assert_eq!(
        s.scalar("SELECT tags FROM imp WHERE entity_id = 'n4'"),
        "[\"a\"]"
    );

    // Run again: every file is recorded as done; nothing is sent, and the
    // rows refused before still make the status say not all was stored.
    let mut again = import(&s, &["--table", "imp"], &state);
    again.arg(&data);
    let (ok, out, err) = run_with_input(&mut again, "");
    assert!(!ok, "{out}{err}");
    assert!(err.contains("imported before"), "{err}");
    assert!(
        out.contains("0 events stored, 0 rows rejected")
            && out.contains("(4 more in earlier runs)"),
        "{out}"
    );
    // The state belongs to this server and tenant.
    let mut elsewhere = Command::new(server_bin());
    elsewhere
        .args([
            "import",
            "--table",
            "imp",
            "--flight-url",
            "http://127.0.0.1:9",
        ])
        .arg("--state")
        .arg(&state)
        .arg(&data);
    let (ok, _, err) = run_with_input(&mut elsewhere, "");
    assert!(!ok && err.contains("name another --state file"), "{err}");
    assert_eq!(s.scalar("SELECT count(*) AS n FROM imp"), 9);

    // Without the state, the same rows carry the same ids: all are
    // answered as already there.
    let fresh = dir.path().join("fresh.json");
    let mut without = import(&s, &["--table", "imp"], &fresh);
    without.arg(&data);
    let (_, out, _) = run_with_input(&mut without, "");
    assert!(out.contains("0 events stored, 9 already there"), "{out}");
    assert_eq!(s.scalar("SELECT count(*) AS n FROM imp"), 9);

    // Errors that stop an import before it starts.
    for (args, expected) in [
        (vec!["nosuch.ndjson"], "no file nosuch.ndjson"),
        (
            vec![data.join("notes.txt").to_str().unwrap()],
            "cannot tell the format",
        ),
    ] {
        let mut c = import(&s, &args, &dir.path().join("x.json"));
        let (ok, _, err) = run_with_input(&mut c, "");
        assert!(!ok && err.contains(expected), "{expected:?} in {err}");
    }
}

#[test]
fn an_interrupted_import_resumes_and_stores_every_row_once() {
    let s = hs_server();
    let writer = token("acme", "writer");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.ndjson");
    let total = 60_000;
    let mut body = String::new();
    for i in 0..total {
        body.push_str(&format!(
            "{{\"event_type\":\"tick\",\"entity_id\":\"e{}\",\"payload\":{{\"seq\":{i}}}}}\n",
            i % 97
        ));
    }
    write(&file, body.as_bytes());
    let state = dir.path().join("state.json");
    let args = [
        "--batch-rows",
        "300",
        "--token",
        writer.as_str(),
        file.to_str().unwrap(),
    ];

    // Kill the import once some chunks are acknowledged.
    let mut child = import(&s, &args, &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = || -> u64 {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["files"]
                    .as_object()
                    .and_then(|f| f.values().next().cloned())
            })
            .and_then(|f| f["records"].as_u64())
            .unwrap_or(0)
    };
    wait_until(
        "the import acknowledges chunks",
        Duration::from_secs(60),
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the import ended before it was killed: {status}");
            }
            progress() >= 3000
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let before = progress();
    assert!(before < total, "the import finished before it was killed");

    let mut resumed = import(&s, &args, &state);
    let (ok, out, err) = run_with_input(&mut resumed, "");
    assert!(ok, "{out}{err}");
    assert!(
        err.contains(&format!("resuming after record {before}")),
        "{err}"
    );
    let count = s.post_as(
        "/v1/sql",
        &writer,
        "text/plain",
        "SELECT count(*) AS n, count(DISTINCT seq) AS d, min(seq) AS lo, max(seq) AS hi FROM events",
    );
    assert_eq!(count.status, 200, "{}", count.text());
    assert_eq!(
        count.json()[0],
        json!({"n": total, "d": total, "lo": 0.0, "hi": (total - 1) as f64}),
        "{out}"
    );
}

#[test]
fn a_file_appended_to_is_imported_again_without_storing_its_old_rows_twice() {
    let s = TestServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("log.ndjson");
    let line = |i: u32| format!("{{\"event_type\":\"tick\",\"entity_id\":\"e{i}\"}}\n");
    let mut text: String = (0..3).map(line).collect();
    write(&file, text.as_bytes());
    let state = dir.path().join("state.json");
    let run = || {
        let mut c = import(&s, &[file.to_str().unwrap()], &state);
        run_with_input(&mut c, "")
    };
    let (ok, out, err) = run();
    assert!(ok && out.contains("3 events stored"), "{out}{err}");
    text.extend((3..5).map(line));
    write(&file, text.as_bytes());
    let (ok, out, err) = run();
    assert!(ok, "{out}{err}");
    assert!(err.contains("changed since it was last imported"), "{err}");
    assert!(out.contains("2 events stored, 3 already there"), "{out}");
    assert_eq!(s.scalar("SELECT count(*) AS n FROM events"), 5);
}
