//! Backups: taken under continuous ingest, incremental, checked against
//! their checksums, restored into a new data directory.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) fn backup(s: &TestServer, name: &str) -> Value {
    let r = s.post(
        "/v1/admin/backup",
        "application/json",
        json!({"to": name}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `allsource restore --from FROM --data-dir TO`.
fn restore(from: &std::path::Path, to: &std::path::Path) -> std::process::Output {
    let (from, to) = (from.to_str().unwrap(), to.to_str().unwrap());
    cli(&["restore", "--from", from, "--data-dir", to])
}

/// `allsource restore --from FROM` into a new directory in a temporary
/// one (kept as long as the returned handle); it must succeed.
pub(crate) fn restore_fresh(from: &std::path::Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("restored");
    let out = restore(from, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (target, data)
}

/// `allsource restore --from FROM --as-of POINT` into a new directory in
/// a temporary one (kept as long as the returned handle).
fn restore_as_of(
    from: &std::path::Path,
    point: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::process::Output) {
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("restored");
    let (from, to) = (from.to_str().unwrap(), data.to_str().unwrap());
    let out = cli(&[
        "restore",
        "--from",
        from,
        "--data-dir",
        to,
        "--as-of",
        point,
    ]);
    (target, data, out)
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::server_bin())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_backup_under_ingest_restores_exactly_what_was_acknowledged_before_it() {
    let s = TestServer::start(&["--flush-age", "1h"]);
    // Acknowledged event id → position, from concurrent writers.
    let acked: Arc<Mutex<HashMap<String, u64>>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), s.base.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut r = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> = (0..20).map(|i| format!("w{w}-{r}-{i}")).collect();
                    let body: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"event_id": id, "event_type": "t", "entity_id": format!("e{w}")}))
                        .collect();
                    r += 1;
                    let reply: Value = http
                        .post(format!("{base}/v1/events"))
                        .header("content-type", "application/json")
                        .body(Value::Array(body).to_string())
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    let positions = reply["events"].as_array().unwrap();
                    let mut acked = acked.lock().unwrap();
                    for (id, e) in ids.into_iter().zip(positions) {
                        acked.insert(id, e["position"].as_u64().unwrap());
                    }
                }
            })
        })
        .collect();
    crate::support::wait_until(
        "some events are in",
        std::time::Duration::from_secs(30),
        || acked.lock().unwrap().len() > 300,
    );
    let first = backup(&s, "nightly");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = backup(&s, "nightly");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // The second backup copies only what the first did not hold: every
    // file of the first is reused.
    let files = |b: &Value| b["tables"][0]["files"].as_u64().unwrap();
    assert_eq!(first["files_reused"], 0, "{first}");
    assert_eq!(
        second["files_reused"].as_u64().unwrap(),
        files(&first),
        "{second}"
    );
    assert_eq!(
        second["files_copied"].as_u64().unwrap(),
        files(&second) - files(&first),
        "{second}"
    );
    let last = second["tables"][0]["last_position"].as_u64().unwrap();
    assert!(
        last > first["tables"][0]["last_position"].as_u64().unwrap(),
        "{first} {second}"
    );

    let dir = s.data_dir.join("backups/default/nightly");
    let out = cli(&["backup", "--verify", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("match their checksums"));

    let (_target, data) = restore_fresh(&dir);
    let restored = TestServer::start_in(&data, &[]);
    let rows = restored.sql("SELECT event_id, position FROM events");
    let got: HashMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                r["position"].as_u64().unwrap(),
            )
        })
        .collect();
    let acked = acked.lock().unwrap();
    let want: HashMap<String, u64> = acked
        .iter()
        .filter(|(_, p)| **p <= last)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(
        got.len(),
        want.len(),
        "exactly the events acknowledged up to position {last}"
    );
    assert_eq!(got, want);
    // The restored server goes on numbering after the backup.
    let next = restored.ingest(&json!([{"event_type": "t", "entity_id": "new"}]));
    assert_eq!(next["first_position"].as_u64().unwrap(), last + 1);
}

#[test]
fn a_damaged_backup_is_found_and_not_restored() {
    let mut s = TestServer::start(&[]);
    s.ingest(
        &json!([{"event_type": "t", "entity_id": "a"}, {"event_type": "t", "entity_id": "b"}]),
    );
    let reply = backup(&s, "b1");
    assert_eq!(reply["tables"][0]["table"], "events");
    s.stop();
    let dir = s.data_dir.join("backups/default/b1");
    let parquet = walk(&dir.join("tables"))
        .into_iter()
        .find(|p| p.ends_with(".parquet"))
        .unwrap();
    let mut bytes = std::fs::read(&parquet).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&parquet, bytes).unwrap();
    let out = cli(&["backup", "--verify", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("damaged") && err.contains(".parquet"), "{err}");
    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("new");
    let out = restore(&dir, &data);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
    assert!(!data.exists(), "nothing restored");
    // A data directory that is not empty is refused.
    let out = restore(&dir, &s.data_dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn a_restore_as_of_a_position_or_a_time_keeps_exactly_what_was_acknowledged_by_then() {
    let mut s = TestServer::start(&["--flush-age", "1h"]);
    let batch = |tag: &str| {
        let events: Vec<Value> = (0..4)
            .map(|i| json!({"event_id": format!("{tag}{i}"), "event_type": "t", "entity_id": format!("u{}", i % 2)}))
            .collect();
        Value::Array(events)
    };
    // Three requests: the first flushed (by a clean restart), the others
    // buffered until the backup flushes them.
    let first = s.ingest(&batch("a"));
    s.stop();
    s.restart();
    let second = s.ingest(&batch("b"));
    let second_time = s.sql("SELECT max(ingested_at) AS t FROM events WHERE event_id LIKE 'b%'")[0]
        ["t"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.ingest(&batch("c"));
    let reply = backup(&s, "pit");
    let last = reply["tables"][0]["last_position"].as_u64().unwrap();
    assert_eq!(last, 12, "{reply}");
    let dir = s.data_dir.join("backups/default/pit");
    let ids = |s: &TestServer| -> Vec<String> {
        s.sql("SELECT event_id FROM events ORDER BY position")
            .iter()
            .map(|r| r["event_id"].as_str().unwrap().to_string())
            .collect()
    };
    let all: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|t| (0..4).map(move |i| format!("{t}{i}")))
        .collect();
    let cases = [
        (format!("position:{}", first["last_position"]), 4),
        (second_time, 8),
        (
            format!("position:{}", second["last_position"].as_u64().unwrap() + 2),
            10,
        ),
    ];
    for (point, kept) in cases {
        let (_target, data, out) = restore_as_of(&dir, &point);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("as of"), "{stdout}");
        let restored = TestServer::start_in(&data, &[]);
        let want = &all[..kept];
        assert_eq!(ids(&restored), want, "as of {point}");
        // Versions go on from what was kept; positions after the backup's
        // last, never reused.
        let next =
            restored.ingest(&json!([{"event_id": "c3", "event_type": "t", "entity_id": "u1"}]));
        assert_eq!(
            next["accepted"], 1,
            "a deleted event's id is free again: {next}"
        );
        assert_eq!(next["first_position"].as_u64().unwrap(), last + 1);
        let kept_u1 = want
            .iter()
            .filter(|id| id.ends_with('1') || id.ends_with('3'))
            .count();
        assert_eq!(
            next["events"][0]["version"].as_u64().unwrap(),
            kept_u1 as u64 + 1,
            "{point}"
        );
    }
    let (_target, data, out) = restore_as_of(&dir, "yesterday");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("position:N"));
    assert!(!data.exists(), "nothing restored");
}

#[test]
fn a_backup_of_every_tenant_restores_them_all() {
    let s = TestServer::start(&[]);
    let ingest = |tenant: &str, table: &str, n: usize| {
        let events: Vec<Value> = (0..n)
            .map(|i| json!({"event_id": format!("{tenant}-{i}"), "event_type": "t", "entity_id": "e"}))
            .collect();
        let r = s.post_with(
            &format!("/v1/events?table={table}"),
            &[
                ("content-type", "application/json"),
                ("x-allsource-tenant", tenant),
            ],
            Value::Array(events).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    ingest("acme", "events", 3);
    ingest("acme", "orders", 2);
    ingest("globex", "events", 4);
    // Through the command line, which prints the server's reply.
    let out = cli(&[
        "backup",
        "--to",
        "everyone",
        "--all-tenants",
        "--url",
        &s.base,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables: Vec<(String, String)> = reply["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().into(),
                t["table"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [("acme", "events"), ("acme", "orders"), ("globex", "events")] {
        assert!(
            tables.contains(&(want.0.into(), want.1.into())),
            "{want:?} in {reply}"
        );
    }
    // Into `_all`, beside the tenants' own backups.
    let dir = s.data_dir.join("backups/_all/everyone");
    assert!(dir.join("manifest.json").exists(), "{reply}");
    let (_target, data) = restore_fresh(&dir);
    let restored = TestServer::start_in(&data, &[]);
    let count = |tenant: &str, table: &str| {
        let r = restored.post_with(
            "/v1/sql",
            &[
                ("content-type", "text/plain"),
                ("x-allsource-tenant", tenant),
            ],
            format!("SELECT count(*) AS n FROM {table}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()[0]["n"].as_u64().unwrap()
    };
    assert_eq!(count("acme", "events"), 3);
    assert_eq!(count("acme", "orders"), 2);
    assert_eq!(count("globex", "events"), 4);
}

#[test]
fn backups_need_the_admin_role_and_a_plain_name() {
    let s = TestServer::start(&[]);
    s.ingest(&json!([{"event_type": "t", "entity_id": "a"}]));
    for bad in ["", "../up", "a/b", ".."] {
        let r = s.post(
            "/v1/admin/backup",
            "application/json",
            json!({"to": bad}).to_string(),
        );
        assert_eq!(r.status, 400, "{bad:?}: {}", r.text());
        assert!(r.error().contains("backup name"), "{}", r.error());
    }
    let r = s.post("/v1/admin/backup", "application/json", "{}");
    assert_eq!(r.status, 400, "{}", r.text());
    let h = crate::support::hs_server();
    let reader = crate::support::token("acme", "reader");
    let r = h.post_as(
        "/v1/admin/backup",
        &reader,
        "application/json",
        r#"{"to": "x"}"#,
    );
    assert_eq!(r.status, 403, "{}", r.text());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn subscriptions_are_backed_up_and_restored_never_ahead_of_their_table() {
    let mut s = TestServer::start(&[]);
    let ten: Vec<Value> = (0..10)
        .map(|i| json!({"event_type": "t", "entity_id": format!("u{i}")}))
        .collect();
    s.ingest(&Value::Array(ten));
    for (name, start) in [("early", "after:4"), ("ahead", "after:1000")] {
        let r = s.post(
            "/v1/subscriptions",
            "application/json",
            json!({"name": name, "table": "events", "filter": "entity_id <> 'u0'", "start": start})
                .to_string(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let reply = backup(&s, "b1");
    let names: Vec<&str> = reply["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{reply}");
    s.stop();
    let (_target, data) = restore_fresh(&s.data_dir.join("backups/default/b1"));
    let restored = TestServer::start_in(&data, &[]);
    let early = restored.get("/v1/subscriptions/early").json();
    assert_eq!(early["committed_position"], 4, "{early}");
    assert_eq!(early["filter"], "entity_id <> 'u0'", "{early}");
    // Acknowledged past the ten events the backup holds: the restored
    // server numbers new events from 11, which it must still deliver.
    let ahead = restored.get("/v1/subscriptions/ahead").json();
    assert_eq!(ahead["committed_position"], 10, "{ahead}");
    let next = restored.ingest(&json!([{"event_type": "t", "entity_id": "new"}]));
    assert_eq!(next["first_position"], 11);
    let ahead = restored.get("/v1/subscriptions/ahead").json();
    assert_eq!(ahead["lag_positions"], 1, "{ahead}");
}
