//! Policy bench: the query bench's six queries over N generated events
//! (default 10M, flushed to Delta) as a caller with no restriction, under
//! a row filter (`event_type <> 'click' AND amount >= 10`, about 83% of
//! the rows kept) and under the filter and two masks (`event_id` hashed,
//! `page` redacted), alternating for three rounds; then DuckDB over the
//! same Parquet files, plain and with the same filter as a subquery (its
//! optimizer pushes the filter freely). Prints medians and the ratios to
//! the unrestricted run: the gap between AllSource's filtered ratio and
//! DuckDB's is the price of the read barrier.
//!
//! cargo bench --bench policies -- [--events 10000000] [--repeats 5]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const FILTER: &str = "event_type <> 'click' AND amount >= 10";

fn policy_call(
    http: &reqwest::blocking::Client,
    method: reqwest::Method,
    url: String,
    body: Option<serde_json::Value>,
) {
    let mut r = http.request(method, url);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = r.send().unwrap();
    let status = r.status();
    assert!(
        status.is_success(),
        "{status}: {}",
        r.text().unwrap_or_default()
    );
}

fn main() {
    let events: usize = arg("--events", 10_000_000);
    let repeats: usize = arg("--repeats", 5);
    let (tmp, server) = load_and_flush(events);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let base = server.base.clone();
    // Without auth every caller is an admin without a subject: the
    // policies below apply to every role.
    let set = |name: &str, body: serde_json::Value| {
        policy_call(
            &http,
            reqwest::Method::PUT,
            format!("{base}/v1/policies/{name}"),
            Some(body),
        );
    };
    let filter = |enabled: bool| {
        serde_json::json!({"kind": "row_filter", "tables": ["events"], "filter": FILTER,
                           "enabled": enabled})
    };
    let mask = |enabled: bool| {
        serde_json::json!({"kind": "mask", "tables": ["events"], "enabled": enabled,
                           "masks": {"event_id": "hash", "page": {"redact": {"keep": 3}}}})
    };
    let mut times: BTreeMap<(&str, &str), Vec<Duration>> = BTreeMap::new();
    for _round in 0..3 {
        for (mode, f, m) in [
            ("none", false, false),
            ("filtered", true, false),
            ("masked", true, true),
        ] {
            set("bench_filter", filter(f));
            set("bench_mask", mask(m));
            for (name, sql) in COMPARE_QUERIES {
                let t = median_time(repeats, || {
                    query(&http, &base, sql);
                });
                times.entry((name, mode)).or_default().push(t);
            }
        }
    }
    let median = |v: &Vec<Duration>| {
        let mut v = v.clone();
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let table_dir = tmp.path().join("tables/default/events");
    let filtered: Vec<(String, String)> = COMPARE_QUERIES
        .iter()
        .map(|(name, sql)| {
            let from = format!("FROM (SELECT * FROM events WHERE {FILTER}) AS events");
            (name.to_string(), sql.replace("FROM events", &from))
        })
        .collect();
    let repeats_arg = repeats.to_string();
    let duck = |queries: String| {
        python_json(
            "duckdb_queries.py",
            &[
                table_dir.as_os_str(),
                queries.as_ref(),
                repeats_arg.as_ref(),
            ],
        )
    };
    let plain = duck(serde_json::to_string(COMPARE_QUERIES).unwrap());
    let duck_filtered = duck(serde_json::to_string(&filtered).unwrap());

    println!(
        "\n{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "query (median ms)",
        "none",
        "filtered",
        "masked",
        "filt/none",
        "mask/none",
        "duck",
        "duck filt",
        "d.f/d"
    );
    for (name, _) in COMPARE_QUERIES {
        let n = median(&times[&(*name, "none")]);
        let f = median(&times[&(*name, "filtered")]);
        let m = median(&times[&(*name, "masked")]);
        let d = plain[*name].as_f64().unwrap();
        let df = duck_filtered[*name].as_f64().unwrap();
        println!(
            "{:<22} {:>9.1} {:>9.1} {:>9.1} {:>8.2}x {:>8.2}x {:>9.1} {:>9.1} {:>8.2}x",
            name,
            n * 1e3,
            f * 1e3,
            m * 1e3,
            f / n,
            m / n,
            d * 1e3,
            df * 1e3,
            df / d
        );
    }
    println!(
        "(AllSource over HTTP, JSON results, three alternating rounds; DuckDB in-process over the same Parquet files)"
    );
}
