//! Backups: taken under continuous ingest, incremental, checked against
//! their checksums, restored into a new data directory.

use crate::support::TestServer;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn backup(s: &TestServer, name: &str) -> Value {
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

    let target = tempfile::tempdir().unwrap();
    let data = target.path().join("restored");
    let out = restore(&dir, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
