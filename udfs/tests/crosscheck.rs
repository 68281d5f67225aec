//! `window_funnel` (every mode combination) and `retention` against
//! ClickHouse's own functions, through chDB from the test virtualenv, on
//! the same random data.

use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

fn python() -> String {
    std::env::var("ALLSOURCE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// xorshift: deterministic random data.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// (name, AllSource SQL, ClickHouse SQL); both return columns u and r.
fn queries() -> Vec<(String, String, String)> {
    let names = ["strict_order", "strict_deduplication", "strict_increase"];
    let mut out = Vec::new();
    for bits in 0..8usize {
        let modes: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect();
        let ours_mode = if modes.is_empty() {
            String::new()
        } else {
            format!("'{}', ", modes.join(","))
        };
        let ch_params: String = modes.iter().map(|m| format!(", '{m}'")).collect();
        out.push((
            format!("window_funnel[{}]", modes.join(",")),
            format!(
                "SELECT u, window_funnel(10, {ours_mode}t, e = 1, e = 2, e = 3, e = 4) AS r FROM ev GROUP BY u"
            ),
            format!(
                "SELECT u, windowFunnel(10{ch_params})(t, e = 1, e = 2, e = 3, e = 4) AS r FROM {{table}} GROUP BY u"
            ),
        ));
    }
    out.push((
        "retention".into(),
        "SELECT u, retention(e = 1, e = 2, e = 3, t > 30) AS r FROM ev GROUP BY u".into(),
        "SELECT u, retention(e = 1, e = 2, e = 3, t > 30) AS r FROM {table} GROUP BY u".into(),
    ));
    out
}

#[tokio::test]
async fn analytics_functions_match_clickhouse() {
    let dir = std::env::temp_dir().join(format!("udfs-crosscheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("events.csv");
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut text = String::new();
    for u in 0..3000u64 {
        for _ in 0..rng.below(14) {
            // a small time range and few event kinds: many ties and repeats
            writeln!(text, "{u},{},{}", rng.below(40), rng.below(6)).unwrap();
        }
    }
    std::fs::write(&csv, &text).unwrap();
    let queries = queries();

    let ch_queries: serde_json::Map<String, Value> = queries
        .iter()
        .map(|(name, _, ch)| (name.clone(), Value::String(ch.clone())))
        .collect();
    let out = std::process::Command::new(python())
        .arg(script("chdb_funnel.py"))
        .arg(&csv)
        .arg(Value::Object(ch_queries).to_string())
        .output()
        .expect("run python with chdb (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "chdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    udfs::register_all(&mut ctx).unwrap();
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Schema::new(vec![
        Field::new("u", DataType::UInt32, false),
        Field::new("t", DataType::Int64, false),
        Field::new("e", DataType::Int64, false),
    ]);
    ctx.register_csv(
        "ev",
        csv.to_str().unwrap(),
        CsvReadOptions::new().has_header(false).schema(&schema),
    )
    .await
    .unwrap();

    let mut compared = 0;
    for (name, ours_sql, _) in &queries {
        let batches = ctx.sql(ours_sql).await.unwrap().collect().await.unwrap();
        let mut w = ArrayWriter::new(Vec::new());
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        let rows: Vec<Value> = serde_json::from_slice(&w.into_inner()).unwrap();
        let ours: BTreeMap<String, Value> = rows
            .into_iter()
            .map(|r| (r["u"].to_string(), r["r"].clone()))
            .collect();
        let theirs = reference[name].as_object().unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: group counts differ");
        let distinct: std::collections::BTreeSet<String> =
            theirs.values().map(|v| v.to_string()).collect();
        assert!(
            distinct.len() >= 3,
            "{name}: too little variety {distinct:?}"
        );
        for (u, r) in theirs {
            assert_eq!(ours.get(u), Some(r), "{name}, entity {u}");
            compared += 1;
        }
    }
    assert!(compared > 20_000, "compared only {compared} groups");

    // funnel_steps reaches the same level as window_funnel, with step
    // times in order and within the window, in every mode.
    for (name, ours_sql, _) in queries.iter().filter(|q| q.0.starts_with("window_funnel")) {
        let steps_sql = ours_sql.replace("window_funnel(", "funnel_steps(");
        let sql = format!(
            "SELECT count(*) FROM ({ours_sql}) w JOIN ({steps_sql}) f ON w.u = f.u \
             WHERE w.r <> f.r['level'] \
                OR f.r['step_2'] < f.r['step_1'] OR f.r['step_3'] < f.r['step_2'] \
                OR f.r['step_4'] > f.r['step_1'] + 10"
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let bad = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            bad.contains("| 0 "),
            "{name}: funnel_steps disagrees:\n{bad}"
        );
    }
}

/// Rows of `sql` as JSON objects.
async fn json_rows(ctx: &SessionContext, sql: &str) -> Vec<Value> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut w = ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&bytes).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[tokio::test]
async fn anomaly_functions_match_numpy() {
    let dir = std::env::temp_dir().join(format!("udfs-anomaly-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("series.csv");
    let mut rng = Rng(0x0a0b_0c0d_1357);
    let mut text = String::new();
    for g in 0..300u64 {
        let n = 1 + rng.below(60);
        let constant = g % 17 == 0;
        for t in 0..n {
            let x = if rng.below(25) == 0 {
                String::new() // NULL
            } else if constant {
                "5".to_string()
            } else {
                // a noisy level with a few spikes; coarse values make ties
                let base = 100 + rng.below(40) as i64 - 20;
                let spike = if rng.below(20) == 0 { 300 } else { 0 };
                format!("{}.{}", base + spike, rng.below(4) * 25)
            };
            writeln!(text, "{g},{t},{x}").unwrap();
        }
    }
    std::fs::write(&csv, &text).unwrap();
    let settings = [
        ("zscore", 3.0),
        ("zscore", 1.5),
        ("iqr", 1.5),
        ("iqr", 0.5),
        ("mad", 3.5),
        ("mad", 1.0),
    ];
    let settings_json: Vec<Value> = settings
        .iter()
        .map(|(m, k)| serde_json::json!([m, k]))
        .collect();
    let out = std::process::Command::new(python())
        .arg(script("numpy_anomaly.py"))
        .arg(&csv)
        .arg(Value::Array(settings_json).to_string())
        .output()
        .expect("run python with numpy (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "numpy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Value = serde_json::from_slice(&out.stdout).unwrap();

    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    udfs::register_all(&mut ctx).unwrap();
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ]);
    ctx.register_csv(
        "series",
        csv.to_str().unwrap(),
        CsvReadOptions::new().has_header(false).schema(&schema),
    )
    .await
    .unwrap();

    let (mut compared, mut flagged, mut null_scores) = (0, 0, 0);
    for (method, k) in settings {
        let key = format!("{method}:{k:?}");
        let theirs = &reference[key.as_str()];
        let window = format!(
            "SELECT g, t, anomaly_score(x, '{method}') OVER (PARTITION BY g) AS score, \
             is_anomaly(x, '{method}', {k}) OVER (PARTITION BY g) AS flag FROM series"
        );
        // detect_anomalies over single series, for a sample of them
        let mut rows = json_rows(&ctx, &window).await;
        for g in (0..300).step_by(29) {
            let sql = format!(
                "SELECT {g} AS g, t, score, is_anomaly AS flag FROM detect_anomalies(\
                 'SELECT t, x FROM series WHERE g = {g}', 'x', '{method}', {k})"
            );
            let mut more = json_rows(&ctx, &sql).await;
            assert!(
                !more.is_empty(),
                "detect_anomalies returned nothing for {g}"
            );
            rows.append(&mut more);
        }
        for r in rows {
            let g = r["g"].to_string();
            let t = r["t"].to_string();
            let want = &theirs[g.as_str()][t.as_str()];
            let ctx_msg = format!("{key}, series {g}, t {t}: ours {r}, numpy {want}");
            match (r.get("score").and_then(Value::as_f64), want[0].as_f64()) {
                (None, None) => null_scores += 1,
                (Some(a), Some(b)) => assert!(close(a, b), "{ctx_msg}"),
                _ => panic!("{ctx_msg}"),
            }
            assert_eq!(
                r.get("flag").cloned().unwrap_or(Value::Null),
                want[1],
                "{ctx_msg}"
            );
            if want[1] == Value::Bool(true) {
                flagged += 1;
            }
            compared += 1;
        }
    }
    assert!(compared > 30_000, "compared only {compared} rows");
    assert!(
        flagged > 300,
        "only {flagged} anomalies: the data is too tame"
    );
    assert!(null_scores > 100, "only {null_scores} NULL scores");
}

/// A Python script under the workspace's `tests/python`. Found through the
/// manifest directory cargo gives the running test, not the one compiled
/// in: a test binary reused from a checkout at another path (a shared
/// target directory) would otherwise look in that checkout.
fn script(name: &str) -> std::path::PathBuf {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&manifest)
        .join("../tests/python")
        .join(name)
}
