//! Power loss, simulated: ingest under concurrent clients, `kill -9` at a
//! random moment, then drop every write no fsync covered, as a power cut
//! would, and restart. Every acknowledged event must be there exactly once.
//!
//! The server (test build) logs each sync it completes to the file named
//! by `ALLSOURCE_SYNC_LOG`: a WAL segment's synced length, or a Delta file
//! or directory synced whole. After the kill, each WAL segment is cut to
//! its last synced length (deleted if it never had one), and every file
//! under the tables that was never synced is deleted. What the page cache
//! held beyond that is what a power cut loses. Directory entries of synced
//! files are taken as durable (the server syncs the directories right
//! after the files).

use crate::support::TestServer;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Simulated power cuts; `ALLSOURCE_POWER_LOSS_RUNS` raises it for the
/// documented run (benches/power_loss.sh).
fn runs() -> usize {
    std::env::var("ALLSOURCE_POWER_LOSS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// The last durable length of every synced path (`None`: the whole file).
fn synced(log: &Path) -> HashMap<PathBuf, Option<u64>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (len, path) = line.split_once(' ')?;
            Some((PathBuf::from(path), len.parse().ok()))
        })
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Drops what a power cut would: returns (segments cut, files deleted).
fn lose_unsynced(data: &Path, log: &Path) -> (usize, usize) {
    let synced = synced(log);
    let (mut cut, mut deleted) = (0, 0);
    let mut wal = Vec::new();
    files_under(&data.join("wal"), &mut wal);
    for seg in wal {
        match synced.get(&seg) {
            Some(Some(len)) => {
                if std::fs::metadata(&seg).unwrap().len() > *len {
                    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
                    f.set_len(*len).unwrap();
                    cut += 1;
                }
            }
            Some(None) => {}
            None => {
                std::fs::remove_file(&seg).unwrap();
                deleted += 1;
            }
        }
    }
    let mut tables = Vec::new();
    files_under(&data.join("tables"), &mut tables);
    for file in tables {
        if !synced.contains_key(&file) {
            std::fs::remove_file(&file).unwrap();
            deleted += 1;
        }
    }
    (cut, deleted)
}

#[test]
fn power_loss_at_random_points_keeps_every_acknowledged_event() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("synced.log");
    // Small flushes and segments: cuts land before, during and after
    // flushes and segment rotations.
    let mut s = TestServer::start_in_with_env(
        data.path(),
        &[
            "--flush-rows",
            "300",
            "--flush-age",
            "30ms",
            "--wal-segment-bytes",
            "20000",
            "--maintenance-interval",
            "0s",
        ],
        &[("ALLSOURCE_SYNC_LOG", log.to_str().unwrap())],
    );
    let acked: Arc<Mutex<HashSet<String>>> = Default::default();
    let sent: Arc<Mutex<HashSet<String>>> = Default::default();
    let mut rng = rand::rng();
    let (mut cut, mut deleted) = (0, 0);
    for run in 0..runs() {
        let run_for = Duration::from_millis(rng.random_range(20..300));
        let handles: Vec<_> = (0..3)
            .map(|client| {
                let (acked, sent) = (acked.clone(), sent.clone());
                let url = s.url("/v1/events");
                std::thread::spawn(move || {
                    let http = reqwest::blocking::Client::new();
                    let start = Instant::now();
                    for req in 0.. {
                        let ids: Vec<String> = (0..20)
                            .map(|i| format!("p{run}-c{client}-r{req}-{i}"))
                            .collect();
                        let body: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"event_id": id, "event_type": "power", "entity_id": format!("c{client}")}))
                            .collect();
                        sent.lock().unwrap().extend(ids.iter().cloned());
                        match http
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(Value::Array(body).to_string())
                            .send()
                        {
                            Ok(r) if r.status().is_success() => {
                                acked.lock().unwrap().extend(ids)
                            }
                            Ok(r) if r.status().as_u16() == 503 => {
                                std::thread::sleep(Duration::from_millis(10))
                            }
                            Ok(r) => panic!("unexpected status {}", r.status()),
                            Err(_) => return,
                        }
                        if start.elapsed() > run_for * 4 {
                            return;
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(run_for);
        s.kill9();
        for h in handles {
            h.join().unwrap();
        }
        let (c, d) = lose_unsynced(data.path(), &log);
        cut += c;
        deleted += d;
        s.restart();
    }
    let rows = s.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events");
    assert_eq!(rows[0]["n"], rows[0]["d"], "an event is stored twice");
    let stored: HashSet<String> = s
        .sql("SELECT event_id FROM events")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !stored.contains(*id))
        .take(5)
        .collect();
    eprintln!(
        "power loss: {} runs, {} events acknowledged, {} stored, {cut} segments cut, {deleted} unsynced files dropped",
        runs(),
        acked.len(),
        stored.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged events lost: {lost:?} (of {})",
        acked.len()
    );
    assert!(
        acked.len() > 100,
        "too little was acknowledged: {}",
        acked.len()
    );
    // Events of a request the kill cut off may be stored unacknowledged;
    // nothing stored may be other than what was sent.
    let sent = sent.lock().unwrap();
    let invented: Vec<_> = stored
        .iter()
        .filter(|id| !sent.contains(*id))
        .take(5)
        .collect();
    assert!(invented.is_empty(), "events never sent: {invented:?}");
}
