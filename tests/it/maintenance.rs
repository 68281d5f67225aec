//! Maintenance settings at their bounds, through HTTP and the command
//! line: a retention longer than the calendar is refused where it is given,
//! and one already stored does not stop maintenance. And queries move to
//! each partition's merged files while the run goes on.

use crate::support::{TestServer, events};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[test]
fn a_retention_beyond_the_maximum_is_refused_where_it_is_given() {
    let mut s = TestServer::start(&[]);
    s.ingest(&events("a", 3));
    let (status, reply) = s.client_put(
        "/v1/admin/tables/events/settings",
        r#"{"retention": "300000years"}"#,
    );
    assert_eq!(status, 400, "{reply}");
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        reply["error"],
        json!("retention: \"300000years\" is longer than the maximum, 1000years")
    );
    // The maximum itself is accepted, and maintenance runs with it.
    let (status, reply) = s.client_put(
        "/v1/admin/tables/events/settings",
        r#"{"retention": "1000years"}"#,
    );
    assert_eq!(status, 200, "{reply}");
    s.stop();
    s.restart();
    let r = s.post("/v1/admin/compact?table=events", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));

    // The flag is refused at start-up, naming itself and the maximum.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::server_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0"])
        .args(["--pg-addr", "127.0.0.1:0"])
        .args(["--retention", "300000years"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--retention") && stderr.contains("longer than the maximum, 1000years"),
        "{stderr}"
    );
}

#[test]
fn a_stored_retention_beyond_the_calendar_does_not_stop_maintenance() {
    // As a server before the bound could have stored it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("table-settings.json"),
        r#"{"default.events": {"retention": "300000years", "maintenance_interval": "1s"}}"#,
    )
    .unwrap();
    let mut s = TestServer::start_in(dir.path(), &["--maintenance-interval", "0s"]);
    s.ingest(&events("a", 3));
    // A clean stop flushes: the table has data files for retention to
    // look at.
    s.stop();
    s.restart();
    // The manual run answers (it used to drop the connection) ...
    let r = s.post("/v1/admin/compact?table=events", "application/json", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let outcome = r.json()["reports"][0]["outcome"].clone();
    assert!(
        !outcome.as_str().unwrap().starts_with("failed"),
        "{outcome}"
    );
    // ... and the schedule keeps running, run after run.
    let runs = "SELECT count(*) FROM system.compactions WHERE table_name = 'events'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.scalar(runs).as_u64().unwrap() < 3 {
        assert!(Instant::now() < deadline, "the schedule stopped running");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(3));
    assert_eq!(
        s.metric("allsource_background_panics_total{task=\"maintenance\"}"),
        0.0
    );
}

/// A run merges partition by partition, and queries read each merged
/// partition's new file from its commit on, not from the end of the run,
/// so the replaced files can be vacuumed one retention after their
/// commit rather than one after the run.
#[test]
fn queries_read_each_merged_partition_before_the_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &["--maintenance-interval", "0"],
        &[("FAILPOINTS", "maintenance-after-merge=return(4000)")],
    );
    // Three rounds of two days: three small files in each day partition.
    crate::compaction::small_files(&mut s, "r", 3, 40, 2);
    let files_of_first_day = |s: &TestServer| {
        s.physical_plan("SELECT * FROM events WHERE event_date = DATE '2026-02-01'")
            .matches(".parquet")
            .count()
    };
    assert_eq!(files_of_first_day(&s), 3);
    let url = s.url("/v1/admin/compact");
    let run = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .post(url)
            .timeout(Duration::from_secs(120))
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    // The first day is merged first; the run then waits 4 s after it, and
    // as long again after the second day.
    let started = Instant::now();
    crate::support::wait_until(
        "the first day's merged file is read",
        Duration::from_secs(60),
        || files_of_first_day(&s) == 1,
    );
    assert!(
        !run.is_finished(),
        "the run ended before the first day was read merged"
    );
    assert_eq!(run.join().unwrap(), 200);
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(120));
}

/// Vacuum counts a replaced file's age from when queries stopped being
/// handed it, not from the commit that replaced it. The run below waits
/// 6 s between its merge and moving queries to it (as a flush holding the
/// table would make it wait), longer than the 4 s retention: its own
/// vacuum leaves the replaced files, which queries were given until a
/// moment before, and a run one retention later deletes them.
#[test]
fn vacuum_counts_a_files_age_from_when_queries_stopped_being_given_it() {
    use crate::compaction::{compact, parquet_files, small_files};
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start_in_with_env(
        dir.path(),
        &[
            "--maintenance-interval",
            "0",
            "--vacuum-retention",
            "0s",
            "--query-timeout",
            "4s",
        ],
        &[("FAILPOINTS", "maintenance-before-adopt=1*return(6000)")],
    );
    // Three small files in one day partition.
    small_files(&mut s, "r", 3, 40, 1);
    assert_eq!(parquet_files(&s.data_dir).len(), 3);
    let done = compact(&s, "?table=events");
    let r = &done["reports"][0];
    assert_eq!(r["outcome"], json!("done"), "{done}");
    assert_eq!(r["files_out"], json!(1), "{done}");
    assert!(r["duration_ms"].as_u64().unwrap() >= 6000, "{done}");
    assert_eq!(r["vacuumed_files"], json!(0), "{done}");
    assert_eq!(parquet_files(&s.data_dir).len(), 4);
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(120));
    std::thread::sleep(Duration::from_millis(4500));
    assert_eq!(crate::compaction::vacuum_until(&s, 1), 3);
    assert_eq!(s.scalar("SELECT count(*) FROM events"), json!(120));
}
