//! `window_funnel` against ClickHouse's `windowFunnel` (through chDB, from
//! the test virtualenv) on random data, in every mode combination.

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{UInt8Type, UInt32Type};
use datafusion::prelude::{CsvReadOptions, SessionConfig, SessionContext};
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

#[tokio::test]
async fn window_funnel_matches_clickhouse_in_every_mode() {
    let dir = tempfile_dir();
    let csv = dir.join("events.csv");
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut text = String::new();
    for u in 0..3000u64 {
        for _ in 0..rng.below(14) {
            // small time range and few event kinds: many ties and repeats
            writeln!(text, "{u},{},{}", rng.below(40), rng.below(6)).unwrap();
        }
    }
    std::fs::write(&csv, &text).unwrap();

    let names = ["strict_order", "strict_deduplication", "strict_increase"];
    let modes: Vec<String> = (0..8)
        .map(|bits: usize| {
            names
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();

    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/chdb_funnel.py"
        ))
        .arg(&csv)
        .arg(serde_json_list(&modes))
        .output()
        .expect("run python with chdb (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "chdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = String::from_utf8(out.stdout).unwrap();

    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    udfs::register_all(&mut ctx).unwrap();
    ctx.register_csv(
        "ev",
        csv.to_str().unwrap(),
        CsvReadOptions::new()
            .has_header(false)
            .schema(&datafusion::arrow::datatypes::Schema::new(vec![
                datafusion::arrow::datatypes::Field::new(
                    "u",
                    datafusion::arrow::datatypes::DataType::UInt32,
                    false,
                ),
                datafusion::arrow::datatypes::Field::new(
                    "t",
                    datafusion::arrow::datatypes::DataType::Int64,
                    false,
                ),
                datafusion::arrow::datatypes::Field::new(
                    "e",
                    datafusion::arrow::datatypes::DataType::Int64,
                    false,
                ),
            ])),
    )
    .await
    .unwrap();
    let mut compared = 0;
    for mode in &modes {
        let mode_arg = if mode.is_empty() {
            String::new()
        } else {
            format!("'{mode}', ")
        };
        let sql = format!(
            "SELECT u, window_funnel(10, {mode_arg}t, e = 1, e = 2, e = 3, e = 4) AS level FROM ev GROUP BY u"
        );
        let batches: Vec<RecordBatch> = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let mut ours = BTreeMap::new();
        for b in &batches {
            let u = b.column(0).as_primitive::<UInt32Type>();
            let l = b.column(1).as_primitive::<UInt8Type>();
            for i in 0..b.num_rows() {
                ours.insert(u.value(i).to_string(), l.value(i));
            }
        }
        let theirs = reference_levels(&reference, mode);
        let distinct: std::collections::BTreeSet<_> = theirs.values().collect();
        assert!(
            distinct.len() >= 3,
            "mode {mode:?}: too little variety {distinct:?}"
        );
        assert_eq!(
            ours.len(),
            theirs.len(),
            "mode {mode:?}: group counts differ"
        );
        for (u, level) in &theirs {
            assert_eq!(ours.get(u), Some(level), "mode {mode:?}, entity {u}");
            compared += 1;
        }
    }
    assert!(compared > 10_000, "compared only {compared} groups");
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("udfs-crosscheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn serde_json_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(","))
}

/// Pulls `{u: level}` for one mode out of the script's JSON, without a
/// JSON dependency in this crate: the shape is fixed.
fn reference_levels(json: &str, mode: &str) -> BTreeMap<String, u8> {
    let key = format!("\"{mode}\": {{");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("mode {mode:?} missing"))
        + key.len();
    let end = start + json[start..].find('}').unwrap();
    json[start..end]
        .split(", ")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once(": ").unwrap();
            (k.trim_matches('"').to_string(), v.parse().unwrap())
        })
        .collect()
}
