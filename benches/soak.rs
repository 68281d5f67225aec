//! Soak: hours of ingest at 70% of the measured maximum, with queries and
//! scheduled compaction running alongside; reports the server's RSS over
//! time and checks that the final count equals the events acknowledged.
//!
//! cargo bench --bench soak -- [--minutes 60] [--fraction 0.7]
//!     [--calibrate-minutes 10 | --maximum EVENTS_PER_S] [--batch 5000]
//!     [--connections 4]
//!     [--days 30] [--warmup-minutes 10] [--window-minutes 5]
//!     [--server-args "--max-buffer-bytes 67108864 ..."]
//!
//! RSS growth is judged on its floor: the lowest RSS of each
//! `--window-minutes` window after `--warmup-minutes`, fitted by least
//! squares and given in percent of the mean floor per hour. The buffer
//! (up to `--max-buffer-bytes`) fills and empties with every flush and
//! compaction's pool with every run, so RSS swings by hundreds of MiB
//! between samples; a fit over raw samples measures where those swings
//! fell. What a leak adds stays through the troughs, so it raises the
//! floor. The fits over every sample, and over RSS minus the memory
//! gauges, are printed beside it.
//!
//! The maximum is the rate the server sustains with its maintenance
//! keeping up. A calibration server of its own (same flags) first takes a
//! load as fast as it will for `--calibrate-minutes`; the load then stops,
//! the buffer is flushed and a compaction brings the table (and its
//! entity copy) up to date. The maximum is the events taken over the
//! load's time plus that drain's (a scheduled run still going is waited
//! for, then one more run takes what was flushed after its snapshot):
//! what the server takes and also compacts per second. The soak's reader
//! runs through the calibration too, as it does through the soak: its
//! queries scan the whole table one after another and take about a core
//! of their own, which a maximum measured without them does not leave
//! for maintenance. The rate a server accepts at full speed is not
//! that: its maintenance falls behind, and earlier hours offered 70% of
//! a 10-minute full-speed rate achieved a third to a half of it, refused
//! with 503 and retried, so they measured a saturated server, not one at
//! 70%. `--maximum N` skips the calibration and uses N events/s.
//!
//! The soak itself runs on a fresh server, so that its table holds only
//! what the soak acknowledges. Before it starts, the disk the soak would
//! fill (at the calibration's bytes per event, table, copy and not yet
//! vacuumed files) is compared with the free space; a soak that would
//! not fit stops there.
//!
//! Every 5 s it samples the server's RSS and the memory gauges of
//! `/metrics` (buffers, compaction, queries, entity index) and the number
//! of Parquet files stored, and prints them over the run.
//!
//! This is a stability check, not a comparison: no peer runs the same
//! work, because what it measures (memory growth and lost events over
//! hours) is ours alone.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Slope of `samples` (seconds, bytes) by least squares, in bytes/s.
fn slope(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (mx, my) = samples
        .iter()
        .fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
    let (num, den) = samples.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

/// The lowest sample of each `window` seconds from `start`, at the
/// window's middle; a window with no sample is skipped.
fn floors(samples: &[(f64, f64)], start: f64, window: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    for &(at, v) in samples {
        let middle = start + ((at - start) / window).floor() * window + window / 2.0;
        match out.last_mut() {
            Some(last) if last.0 == middle => last.1 = last.1.min(v),
            _ => out.push((middle, v)),
        }
    }
    out
}

/// The memory gauges of `/metrics` a sample records, in MiB.
const GAUGES: &[(&str, &str)] = &[
    ("buffer", "allsource_buffer_bytes"),
    ("compaction", "allsource_compaction_memory_bytes"),
    ("queries", "allsource_query_memory_bytes"),
    ("entities", "allsource_entity_index_bytes"),
];

/// The values of [`GAUGES`] now (0 for any the server did not answer).
fn gauges(http: &reqwest::blocking::Client, base: &str) -> Vec<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    GAUGES
        .iter()
        .map(|(_, series)| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .collect()
}

/// The files under `dir` (at any depth), each with its size in bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => files.push((e.path(), m.len())),
                Err(_) => {}
            }
        }
    }
    files
}

/// Parquet files under `dir`, the replaced ones vacuum has not deleted
/// yet included.
fn parquet_files(dir: &std::path::Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|x| x == "parquet"))
        .count()
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    files_under(dir).iter().map(|(_, size)| size).sum()
}

/// Bytes free on the file system that holds `dir`.
fn free_bytes(dir: &std::path::Path) -> f64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("run df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse::<f64>().ok())
        .expect("df gives the free bytes")
}

/// The soak's reader: analytic queries over the whole table, one after
/// another with 200 ms between them, until `stop`. Answers are counted in
/// `queries`, and timeouts (408) in `timeouts`, as the table outgrows
/// --query-timeout; any other failure ends the soak, except that the
/// table is missing until the first ingest lands.
fn spawn_reader(
    base: &str,
    stop: &Arc<AtomicBool>,
    queries: &Arc<AtomicUsize>,
    timeouts: &Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let (stop, queries, timeouts, base) = (
        stop.clone(),
        queries.clone(),
        timeouts.clone(),
        base.to_string(),
    );
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let sqls = [
            "SELECT event_type, count(*) FROM events GROUP BY event_type",
            "SELECT count(DISTINCT entity_id) FROM events",
            "SELECT * FROM events WHERE entity_id = 'u4242' ORDER BY timestamp",
            "SELECT * FROM events ORDER BY timestamp DESC LIMIT 10",
        ];
        let mut i = 0;
        let mut answered = false;
        while !stop.load(Ordering::Relaxed) {
            let sql = sqls[i % sqls.len()];
            let (status, text) = post_sql(&http, &base, sql);
            match status {
                400 if !answered && text.contains("not found") => {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                200 => {
                    answered = true;
                    queries.fetch_add(1, Ordering::Relaxed)
                }
                408 => timeouts.fetch_add(1, Ordering::Relaxed),
                _ => panic!("{sql}: {status} {text}"),
            };
            i += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

/// What the calibration measured.
struct Calibration {
    events: usize,
    retries: usize,
    /// The full-speed load.
    load: Duration,
    /// From the load's end until its events were flushed and compacted.
    drain: Duration,
    /// Bytes under the storage root after the drain, per event.
    bytes_per_event: f64,
}

/// Loads a server of its own as fast as it takes the events for `time`,
/// then waits for the buffer to be flushed and compacts the table; the
/// server and its files are gone afterwards.
fn calibrate(
    flags: &[&str],
    time: Duration,
    bodies: &Arc<Vec<Vec<u8>>>,
    batch: usize,
    connections: usize,
) -> Calibration {
    let tmp = tempfile::tempdir().unwrap();
    let server = BenchServer::start(tmp.path(), flags);
    let url = format!("{}/v1/events", server.base);
    // The soak's reader runs through the load and the drain: the maximum
    // is what the server takes while it also answers the soak's queries.
    let stop = Arc::new(AtomicBool::new(false));
    let (queries, timeouts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = spawn_reader(&server.base, &stop, &queries, &timeouts);
    let load = run_load_flat_out(&url, bodies.clone(), batch, connections, time);
    let drained = Instant::now();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    while gauges(&http, &server.base)[0] > 0.0 {
        assert!(
            drained.elapsed() < Duration::from_secs(1800),
            "the buffer was not flushed within 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A scheduled run may hold the table (409): once it is done, one more
    // run takes what was flushed after its snapshot.
    loop {
        let r = http
            .post(format!("{}/v1/admin/compact?table=events", server.base))
            .send()
            .unwrap();
        match r.status().as_u16() {
            200 => break,
            409 => std::thread::sleep(Duration::from_millis(500)),
            status => panic!("compaction: {status} {}", r.text().unwrap_or_default()),
        }
    }
    let drain = drained.elapsed();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let bytes = dir_bytes(&tmp.path().join("tables"));
    server.stop();
    Calibration {
        events: load.events,
        retries: load.retries,
        load: load.elapsed,
        drain,
        bytes_per_event: bytes as f64 / load.events.max(1) as f64,
    }
}

/// One sample of the server's state.
struct Sample {
    at: f64,
    rss: f64,
    gauges: Vec<f64>,
    files: usize,
}

fn main() {
    let minutes: f64 = arg("--minutes", 60.0);
    let fraction: f64 = arg("--fraction", 0.7);
    let calibrate_for = Duration::from_secs_f64(arg("--calibrate-minutes", 10.0) * 60.0);
    let maximum: Option<f64> = match arg("--maximum", 0.0) {
        m if m > 0.0 => Some(m),
        _ => None,
    };
    let batch: usize = arg("--batch", 5_000);
    let connections: usize = arg("--connections", 4);
    let days: u64 = arg("--days", 30);
    let warmup: f64 = arg("--warmup-minutes", 10.0) * 60.0;
    let window: f64 = arg("--window-minutes", 5.0) * 60.0;
    // More server flags, e.g. smaller transient pools, so that what stays
    // in memory is more of what RSS shows.
    let extra: String = arg("--server-args", String::new());
    // Maintenance every minute: compaction, checkpoints and vacuum run
    // throughout, under the load.
    let mut flags = vec![
        "--maintenance-interval",
        "1m",
        "--vacuum-retention",
        "1m",
        "--query-timeout",
        "1m",
    ];
    flags.extend(extra.split_whitespace());
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * batch) as u64, batch, 250_000, days))
            .collect(),
    );
    let (maximum, bytes_per_event) = match maximum {
        Some(m) => (m, arg("--bytes-per-event", 100.0)),
        None => {
            let c = calibrate(&flags, calibrate_for, &bodies, batch, connections);
            let rate = c.events as f64 / (c.load + c.drain).as_secs_f64();
            println!(
                "soak: calibration took {} events in {:.1} min at full speed ({:.0} events/s, {} retries), then needed {:.1} min to flush and compact them: {rate:.0} events/s sustained with maintenance keeping up; {:.0} bytes stored per event",
                c.events,
                c.load.as_secs_f64() / 60.0,
                c.events as f64 / c.load.as_secs_f64(),
                c.retries,
                c.drain.as_secs_f64() / 60.0,
                c.bytes_per_event
            );
            (rate, c.bytes_per_event)
        }
    };
    let target = maximum * fraction;
    let tmp = tempfile::tempdir().unwrap();
    let needed = target * minutes * 60.0 * bytes_per_event;
    let free = free_bytes(tmp.path());
    println!(
        "soak: at {target:.0} events/s ({:.0}% of {maximum:.0}) for {minutes} min, about {:.1} GB stored; {:.1} GB free",
        fraction * 100.0,
        needed / 1e9,
        free / 1e9
    );
    assert!(
        needed < free * 0.9,
        "the soak would not fit on this disk: lower --minutes or --fraction, or free space"
    );
    let server = BenchServer::start(tmp.path(), &flags);
    let pid = server.child.id();
    let url = format!("{}/v1/events", server.base);

    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicUsize::new(0));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let reader = spawn_reader(&server.base, &stop, &queries, &timeouts);
    let sampler = {
        let (stop, base) = (stop.clone(), server.base.clone());
        let tables = tmp.path().join("tables");
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let start = Instant::now();
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                samples.push(Sample {
                    at: start.elapsed().as_secs_f64(),
                    rss: rss(pid) as f64,
                    gauges: gauges(&http, &base),
                    files: parquet_files(&tables),
                });
                for _ in 0..5 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            samples
        })
    };
    // The soak lasts `minutes` however fast the server takes the events:
    // if it cannot keep up with the target, the achieved rate says so.
    let soak = run_load_for(
        &url,
        bodies,
        batch,
        connections,
        target,
        Duration::from_secs_f64(minutes * 60.0),
    );
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let samples = sampler.join().unwrap();

    let acked = soak.events;
    // Counted a day at a time (the events span `days` days from 2026-01-01),
    // and whatever lies outside them, so that no one query over the whole
    // table has to finish within --query-timeout.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let count = |condition: String| -> u64 {
        let text = query(
            &http,
            &server.base,
            &format!("SELECT count(*) AS n FROM events WHERE {condition}"),
        );
        serde_json::from_str::<serde_json::Value>(&text).unwrap()[0]["n"]
            .as_u64()
            .unwrap()
    };
    // By the date partition: each count reads only that day's files, and
    // a count with no other condition comes from the files' row counts.
    let day = |d: u64| format!("DATE '2026-01-01' + INTERVAL '{d} days'");
    let mut counted = count(format!(
        "event_date < {} OR event_date >= {}",
        day(0),
        day(days)
    ));
    for d in 0..days {
        counted += count(format!("event_date = {}", day(d)));
    }
    let settled: Vec<&Sample> = samples.iter().filter(|s| s.at >= warmup).collect();
    let raw: Vec<(f64, f64)> = settled.iter().map(|s| (s.at, s.rss)).collect();
    // RSS less what the gauges account for (buffer, compaction, queries).
    let net: Vec<(f64, f64)> = settled
        .iter()
        .map(|s| (s.at, s.rss - s.gauges[..3].iter().sum::<f64>()))
        .collect();
    let floor = floors(&raw, warmup, window);
    let growth = |series: &[(f64, f64)]| {
        let mean = series.iter().map(|s| s.1).sum::<f64>() / series.len().max(1) as f64;
        (slope(series) * 3600.0 / mean * 100.0, mean)
    };
    let (floor_growth, floor_mean) = growth(&floor);
    let (raw_growth, raw_mean) = growth(&raw);
    let (net_growth, net_mean) = growth(&net);
    let mib = |b: f64| b / 1048576.0;
    println!(
        "  {:>6}  {:>8}  {}  parquet files",
        "s",
        "RSS MiB",
        GAUGES
            .iter()
            .map(|(name, _)| format!("{name:>10}"))
            .collect::<String>()
    );
    for s in samples.iter().step_by((samples.len() / 30).max(1)) {
        println!(
            "  {:>6.0}  {:>8.0}  {}  {:>6}",
            s.at,
            mib(s.rss),
            s.gauges
                .iter()
                .map(|g| format!("{:>10.1}", mib(*g)))
                .collect::<String>(),
            s.files
        );
    }
    println!(
        "soak: {:.0} events/s achieved over {:.1} min ({} requests, p99 {:?}, {} retries), {} queries answered, {} timed out (408)",
        soak.rate(),
        soak.elapsed.as_secs_f64() / 60.0,
        soak.latencies.len(),
        soak.percentile(0.99),
        soak.retries,
        queries.load(Ordering::Relaxed),
        timeouts.load(Ordering::Relaxed)
    );
    println!("  floor of each window (s, RSS MiB):");
    for (at, b) in &floor {
        println!("  {at:>6.0}  {:>8.0}", mib(*b));
    }
    println!(
        "soak: RSS floor (lowest of each {:.0}-min window after {:.0} min) mean {:.0} MiB, growth {floor_growth:+.2}%/h (target < 1%/h); peak {:.0} MiB",
        window / 60.0,
        warmup / 60.0,
        mib(floor_mean),
        mib(server.peak_rss() as f64)
    );
    println!(
        "soak: fits over every sample after warm-up: RSS mean {:.0} MiB {raw_growth:+.2}%/h; RSS less the gauges mean {:.0} MiB {net_growth:+.2}%/h",
        mib(raw_mean),
        mib(net_mean)
    );
    println!("soak: {acked} events acknowledged, {counted} counted");
    assert_eq!(
        counted, acked as u64,
        "the final count differs from the ledger"
    );
    server.stop();
}
