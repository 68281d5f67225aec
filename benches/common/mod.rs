//! Shared by the bench tools: starting a release server and posting events.

#![allow(dead_code)]

mod readers;
// Not every bench uses them.
#[allow(unused_imports)]
pub(crate) use readers::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The queries the query benches time, each over `events`.
pub(crate) const COMPARE_QUERIES: &[(&str, &str)] = &[
    (
        "count by type and day",
        "SELECT event_type, event_date, count(*) AS n FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "distinct entities",
        "SELECT count(DISTINCT entity_id) FROM events",
    ),
    (
        "p95 of amount",
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY amount) FROM events",
    ),
    (
        "top 10 entities",
        "SELECT entity_id, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC, entity_id LIMIT 10",
    ),
    (
        "latest 10 events",
        "SELECT event_id, event_type, entity_id, timestamp FROM events ORDER BY timestamp DESC LIMIT 10",
    ),
    (
        "one entity's events",
        "SELECT event_type, timestamp, amount FROM events WHERE entity_id = 'u4242' ORDER BY timestamp",
    ),
];

/// A server process for a bench run.
pub(crate) struct BenchServer {
    pub(crate) child: Child,
    pub(crate) base: String,
    /// The Flight SQL endpoint, `http://127.0.0.1:<port>`.
    pub(crate) flight: String,
    pub(crate) data_dir: PathBuf,
}

impl BenchServer {
    // The child is waited for by `Drop` (and `stop`), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub(crate) fn start(data_dir: &Path, extra: &[&str]) -> BenchServer {
        let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_allsource"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(["--flight-addr", "127.0.0.1:0"])
            .args(["--pg-addr", "127.0.0.1:0"])
            .args(extra)
            .env("ALLSOURCE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start allsource");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        let mut base = None;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!(
                    "server exited during start-up; see {}/server.log",
                    data_dir.display()
                );
            }
            if let Some(addr) = line.trim().strip_prefix("allsource listening on ") {
                base = Some(addr.to_string());
            }
            if let Some(addr) = line
                .trim()
                .strip_prefix("allsource flight sql listening on grpc://")
            {
                let server = BenchServer {
                    child,
                    base: base.expect("the HTTP address is printed first"),
                    flight: format!("http://{addr}"),
                    data_dir: data_dir.to_path_buf(),
                };
                server.wait_ready();
                break server;
            }
        }
    }

    /// Waits until `/ready` answers 200: the address is printed before the
    /// WAL is replayed.
    fn wait_ready(&self) {
        let http = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/ready", self.base)).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server did not become ready");
    }

    /// Peak resident memory of the server so far, in bytes.
    pub(crate) fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// CPU time the server has used so far (user + system), in seconds,
    /// from `/proc/PID/stat` (clock ticks of 1/100 s on Linux).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are the 14th and 15th fields; `rest` starts at the 3rd.
        (ticks(11) + ticks(12)) as f64 / 100.0
    }

    /// SIGTERM and wait: the server flushes everything to Delta.
    pub(crate) fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic pseudo-random numbers (xorshift), so runs are comparable.
pub(crate) struct Rng(u64);
impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(crate) const EVENT_TYPES: [&str; 6] = [
    "page_view",
    "click",
    "signup",
    "add_to_cart",
    "checkout",
    "purchase",
];

/// One NDJSON batch of `n` events, starting at event number `first`:
/// `entities` distinct entities, timestamps spread over `days` days.
pub(crate) fn ndjson_batch(first: u64, n: usize, entities: u64, days: u64) -> Vec<u8> {
    let mut rng = Rng::new(first.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xABCDEF);
    let mut out = Vec::with_capacity(n * 160);
    let start_ms: u64 = 1_767_225_600_000; // 2026-01-01
    for i in 0..n as u64 {
        let ty = EVENT_TYPES[rng.below(EVENT_TYPES.len() as u64) as usize];
        let entity = rng.below(entities);
        let ts = start_ms + rng.below(days * 86_400_000);
        let amount = (rng.below(100_000) as f64) / 100.0;
        let line = format!(
            "{{\"event_type\":\"{ty}\",\"entity_id\":\"u{entity}\",\"timestamp\":{ts},\"payload\":{{\"amount\":{amount},\"page\":\"/p/{}\",\"seq\":{}}}}}\n",
            rng.below(50),
            first + i
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// Result of a load run.
pub(crate) struct LoadReport {
    pub(crate) events: usize,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
    pub(crate) retries: usize,
}

impl LoadReport {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Posts `bodies` (each `per_body` events) over `connections` connections.
/// With `rate`, requests are paced to that many events per second overall.
pub(crate) fn run_load(
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    per_body: usize,
    total_requests: usize,
    connections: usize,
    rate: Option<f64>,
) -> LoadReport {
    load(
        url,
        bodies,
        per_body,
        total_requests,
        connections,
        rate,
        None,
    )
}

/// [`run_load`] for `duration` of wall time at `rate`: requests not sent
/// by then (the server took them more slowly) are not sent at all.
pub(crate) fn run_load_for(
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    per_body: usize,
    connections: usize,
    rate: f64,
    duration: Duration,
) -> LoadReport {
    let deadline = Instant::now() + duration;
    let requests = (rate * duration.as_secs_f64() / per_body as f64).ceil() as usize;
    load(
        url,
        bodies,
        per_body,
        requests,
        connections,
        Some(rate),
        Some(deadline),
    )
}

/// [`run_load`] as fast as the server takes the requests, for `duration`
/// of wall time.
pub(crate) fn run_load_flat_out(
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    per_body: usize,
    connections: usize,
    duration: Duration,
) -> LoadReport {
    let deadline = Instant::now() + duration;
    load(
        url,
        bodies,
        per_body,
        usize::MAX,
        connections,
        None,
        Some(deadline),
    )
}

fn load(
    url: &str,
    bodies: Arc<Vec<Vec<u8>>>,
    per_body: usize,
    total_requests: usize,
    connections: usize,
    rate: Option<f64>,
    deadline: Option<Instant>,
) -> LoadReport {
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let interval = rate.map(|r| Duration::from_secs_f64(per_body as f64 / r));
    let handles: Vec<_> = (0..connections)
        .map(|_| {
            let (bodies, next, retries) = (bodies.clone(), next.clone(), retries.clone());
            let url = url.to_string();
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap();
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total_requests || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    if let Some(iv) = interval {
                        let due = start + iv * i as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    let body = bodies[i % bodies.len()].clone();
                    loop {
                        let t = Instant::now();
                        let r = http
                            .post(&url)
                            .header("content-type", "application/x-ndjson")
                            .body(body.clone())
                            .send()
                            .expect("post");
                        let status = r.status();
                        let _ = r.bytes();
                        if status.as_u16() == 503 {
                            retries.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        assert!(status.is_success(), "ingest failed: {status}");
                        latencies.push(t.elapsed());
                        break;
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.join().unwrap());
    }
    LoadReport {
        // One latency per acknowledged request.
        events: latencies.len() * per_body,
        elapsed: start.elapsed(),
        latencies,
        retries: retries.load(Ordering::Relaxed),
    }
}

/// `--name value` from the bench's arguments.
pub(crate) fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts a server in a new directory, loads `events` generated events
/// (200,000 entities over 30 days) over HTTP, and restarts it so that
/// everything is in Delta. Returns the directory and the running server.
pub(crate) fn load_and_flush(events: usize) -> (tempfile::TempDir, BenchServer) {
    load_and_flush_over(events, 200_000, 30)
}

/// [`load_and_flush`] with `entities` distinct entities over `days` days.
pub(crate) fn load_and_flush_over(
    events: usize,
    entities: u64,
    days: u64,
) -> (tempfile::TempDir, BenchServer) {
    let batch = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let server = BenchServer::start(tmp.path(), &[]);
    let url = format!("{}/v1/events", server.base);
    let bodies = Arc::new(
        (0..64)
            .map(|i| ndjson_batch((i * batch) as u64, batch, entities, days))
            .collect::<Vec<_>>(),
    );
    let load = run_load(&url, bodies, batch, events / batch, 4, None);
    println!(
        "loaded {} events at {:.0} events/s; flushing",
        load.events,
        load.rate()
    );
    server.stop();
    let server = BenchServer::start(tmp.path(), &[]);
    (tmp, server)
}

/// Compacts every table of the server (`POST /v1/admin/compact`) and
/// prints how long it took; panics if it fails.
pub(crate) fn compact_all(base: &str) {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let started = Instant::now();
    let r = http
        .post(format!("{base}/v1/admin/compact"))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "compaction: {}", r.text().unwrap());
    println!("compacted in {:.1} s", started.elapsed().as_secs_f64());
}

/// Posts `sql` to the server and returns the JSON body; panics on errors.
pub(crate) fn query(http: &reqwest::blocking::Client, base: &str, sql: &str) -> String {
    let (status, text) = post_sql(http, base, sql);
    assert!((200..300).contains(&status), "{sql}: {text}");
    text
}

/// Posts `sql` to `/v1/sql`; its status and body, whatever the status.
pub(crate) fn post_sql(http: &reqwest::blocking::Client, base: &str, sql: &str) -> (u16, String) {
    let r = http
        .post(format!("{base}/v1/sql"))
        .body(sql.to_string())
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Median wall time of `repeats` runs of `f`, after one warm-up run.
pub(crate) fn median_time(repeats: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Runs the Python script `benches/<script>` with `args` in the bench's
/// Python (`ALLSOURCE_BENCH_PYTHON`, else `python3`) and returns the JSON it
/// prints; panics with its stderr when it fails.
pub(crate) fn python_json(script: &str, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let python = std::env::var("ALLSOURCE_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("benches")
                .join(script),
        )
        .args(args)
        .output()
        .expect("run the bench's python");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Ingests `requests` batches of `per_body` events at `rate` events/s over 4 connections;
/// returns each request's last position and when it was acknowledged.
pub(crate) fn paced_ingest(
    url: &str,
    bodies: &Arc<Vec<Vec<u8>>>,
    per_body: usize,
    requests: usize,
    rate: f64,
) -> Vec<(u64, Instant)> {
    let start = Instant::now();
    let interval = Duration::from_secs_f64(per_body as f64 / rate);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, bodies, next) = (url.to_string(), bodies.clone(), next.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut acks = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return acks;
                    }
                    let due = start + interval * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let reply: serde_json::Value = http
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    let at = Instant::now();
                    acks.push((reply["last_position"].as_u64().unwrap(), at));
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

pub(crate) type Polled = (
    Arc<std::sync::Mutex<Vec<(u64, Instant)>>>,
    Arc<std::sync::atomic::AtomicBool>,
);

/// Reads the `position` of the JSON at `url` (a projection or pipeline)
/// every millisecond on a thread of its own, noting each new one and
/// when it was seen.
pub(crate) fn poll_positions(url: String) -> Polled {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (sink, done) = (seen.clone(), stop.clone());
    std::thread::spawn(move || {
        let http = reqwest::blocking::Client::new();
        let mut last = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let info: serde_json::Value = http.get(&url).send().unwrap().json().unwrap();
            let at = Instant::now();
            let p = info["position"].as_u64().unwrap_or(0);
            if p > last {
                last = p;
                sink.lock().unwrap().push((p, at));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    (seen, stop)
}

/// For each acknowledged request (its last position, when it was
/// acknowledged), the seconds until a poll saw a position covering it;
/// sorted.
pub(crate) fn ack_lags(acks: &[(u64, Instant)], polled: &[(u64, Instant)]) -> Vec<f64> {
    let mut lags: Vec<f64> = acks
        .iter()
        .filter_map(|(last, acked)| {
            let i = polled.partition_point(|(p, at)| p < last || at < acked);
            polled
                .get(i)
                .map(|(_, at)| at.duration_since(*acked).as_secs_f64())
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    lags
}

/// The `p` quantile of sorted `values`.
pub(crate) fn quantile(values: &[f64], p: f64) -> f64 {
    values[((values.len() - 1) as f64 * p).round() as usize]
}
