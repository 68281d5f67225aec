//! `allsource import` bench: the same NDJSON file of events (default 2M,
//! plain and gzip) imported into a release server over Flight, timed until
//! the command exits (every row acknowledged after the server's WAL
//! fsync), against DuckDB loading the plain file with `read_json` into a
//! database file (`benches/duckdb_load.py`). Prints events/s and the
//! ratio AllSource / DuckDB.
//!
//! cargo bench --bench import_compare -- [--events 2000000] [--batch-rows 10000] [--repeats 3]

mod common;

use common::*;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

fn main() {
    let events: usize = arg("--events", 2_000_000);
    let batch_rows: usize = arg("--batch-rows", 10_000);
    let repeats: usize = arg("--repeats", 3);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("events.ndjson");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut first = 0;
        while first < events {
            let n = (events - first).min(100_000);
            out.write_all(&ndjson_batch(first as u64, n, 250_000, 30))
                .unwrap();
            first += n;
        }
    }
    let gz = tmp.path().join("events.ndjson.gz");
    {
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&file).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();
    }
    let mib = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64 / 1048576.0;
    println!(
        "{events} events: {:.0} MiB NDJSON, {:.0} MiB gzip",
        mib(&file),
        mib(&gz)
    );

    let import = |input: &std::path::Path, run: usize| -> f64 {
        let dir = tmp.path().join(format!("server-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let server = BenchServer::start(&dir, &["--maintenance-interval", "0s"]);
        let state = dir.join("import-state.json");
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_allsource"))
            .arg("import")
            .arg(input)
            .args(["--flight-url", &server.flight, "--quiet"])
            .args(["--batch-rows", &batch_rows.to_string()])
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "import failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let http = reqwest::blocking::Client::new();
        let n = query(&http, &server.base, "SELECT count(*) AS n FROM events");
        assert!(n.contains(&events.to_string()), "{n}");
        server.stop();
        std::fs::remove_dir_all(&dir).unwrap();
        secs
    };
    let duckdb = |run: usize| -> f64 {
        let database = tmp.path().join(format!("duck-{run}.db"));
        let r = python_json("duckdb_load.py", &[file.as_os_str(), database.as_os_str()]);
        assert_eq!(r["rows"].as_u64(), Some(events as u64), "{r}");
        std::fs::remove_file(&database).unwrap();
        r["seconds"].as_f64().unwrap()
    };

    let (mut ours, mut ours_gz, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..repeats {
        ours.push(import(&file, run * 2));
        ours_gz.push(import(&gz, run * 2 + 1));
        theirs.push(duckdb(run));
        println!(
            "run {run}: import {:.2} s, import .gz {:.2} s, DuckDB read_json {:.2} s",
            ours[run], ours_gz[run], theirs[run]
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, g, d) = (median(ours), median(ours_gz), median(theirs));
    let rate = |s: f64| events as f64 / s;
    println!("allsource import (NDJSON):      {:>10.0} events/s", rate(a));
    println!("allsource import (NDJSON.gz):   {:>10.0} events/s", rate(g));
    println!("DuckDB read_json into a table:  {:>10.0} events/s", rate(d));
    println!(
        "ratio AllSource / DuckDB (rate): {:.2} plain, {:.2} gzip",
        d / a,
        d / g
    );
}
