//! Tests of folding events into a projection's state: after each batch,
//! the state reads exactly what the same query computes over every event
//! so far.

use super::*;
use crate::projection::define;
use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

fn schema() -> SchemaRef {
    let mut fields = crate::schema::fixed_fields();
    fields.push(Field::new("amount", DataType::Float64, true));
    fields.push(Field::new("plan", DataType::Utf8, true));
    fields.push(Field::new("qty", DataType::Int64, true));
    Arc::new(Schema::new(fields))
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Events `first..first + n` in position order: a few entities and event
/// types, timestamps all distinct but out of order, some nulls.
fn events(rng: &mut Rng, first: i64, n: i64) -> RecordBatch {
    let range = first..first + n;
    let types = ["order", "view", "noise", "signup"];
    let plans = ["free", "pro", "team"];
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut entities = Vec::new();
    let mut times = Vec::new();
    let mut amounts = Vec::new();
    let mut plan = Vec::new();
    let mut qty = Vec::new();
    for i in range.clone() {
        ids.push(format!("e{i}"));
        kinds.push(types[rng.below(4) as usize]);
        entities.push(format!("u{}", rng.below(7)));
        // A permutation of the positions, three days long.
        times.push(1_780_000_000_000_000 + (i * 7919 % 100_003) * 2_592_000);
        amounts.push((rng.below(5) != 0).then(|| match rng.below(40) {
            // NaNs of both signs, which min and max must order as SQL does.
            0 => f64::NAN,
            1 => -f64::NAN,
            _ => rng.below(10_000) as f64 / 7.0,
        }));
        plan.push((rng.below(4) != 0).then(|| plans[rng.below(3) as usize]));
        qty.push((rng.below(3) != 0).then(|| rng.below(100) as i64 - 20));
    }
    let ts = |v: &Vec<i64>| {
        Arc::new(TimestampMicrosecondArray::from(v.clone()).with_timezone("UTC")) as ArrayRef
    };
    let dates: Vec<i32> = times.iter().map(|t| (t / 86_400_000_000) as i32).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(kinds)),
        Arc::new(StringArray::from(entities)),
        ts(&times),
        ts(&times),
        Arc::new(arrow::array::Date32Array::from(dates)),
        Arc::new(StringArray::from(vec![None::<&str>; n as usize])),
        Arc::new(Int64Array::from_iter_values(range.clone())),
        Arc::new(Int64Array::from_iter_values(range.map(|_| 1))),
        Arc::new(Float64Array::from(amounts)),
        Arc::new(StringArray::from(plan)),
        Arc::new(Int64Array::from(qty)),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn session(batches: Vec<RecordBatch>) -> SessionContext {
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(crate::query::CATALOG, crate::query::SCHEMA);
    let mut ctx = SessionContext::new_with_config(config);
    udfs::register_all(&mut ctx).unwrap();
    let table = MemTable::try_new(schema(), vec![batches]).unwrap();
    ctx.register_table("events", Arc::new(table)).unwrap();
    ctx
}

/// The rows of `batch` as text, floats to 9 significant digits, sorted.
fn rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let columns: Vec<Vec<String>> = batch
        .columns()
        .iter()
        .map(|c| {
            if let Some(f) = c.as_primitive_opt::<arrow::datatypes::Float64Type>() {
                return (0..f.len())
                    .map(|i| {
                        if f.is_null(i) {
                            "NULL".into()
                        } else {
                            format!("{:.9e}", f.value(i))
                        }
                    })
                    .collect();
            }
            let fmt = ArrayFormatter::try_new(c.as_ref(), &options).unwrap();
            (0..c.len()).map(|i| fmt.value(i).to_string()).collect()
        })
        .collect();
    let mut out: Vec<Vec<String>> = (0..batch.num_rows())
        .map(|i| columns.iter().map(|c| c[i].clone()).collect())
        .collect();
    out.sort();
    out
}

async fn check(sql: &str) {
    let mut rng = Rng(42);
    let mut all = Vec::new();
    let ctx = session(vec![]);
    let plan = ctx.state().create_logical_plan(sql).await.unwrap();
    let definition = define(&plan).unwrap();
    let mut state = State::new(&definition, &ctx.state()).unwrap();
    let mut next = 0;
    for size in [0, 1, 50, 7, 400, 3] {
        let batch = events(&mut rng, next, size);
        next += size;
        state.fold(&batch).unwrap();
        all.push(batch);
        let expected = session(all.clone())
            .sql(sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let expected = arrow::compute::concat_batches(&state.schema(), &expected).unwrap();
        let got = state.read().unwrap();
        assert_eq!(got.schema(), state.schema());
        assert_eq!(rows(&got), rows(&expected), "{sql} after {next} events");
        // A key read finds the same rows by the hash map as by text.
        if !state.keys.is_empty() {
            let groups = state.state_batch().unwrap();
            let text: Vec<ArrayRef> = (0..state.keys.len())
                .map(|c| cast(groups.column(c), &DataType::Utf8).unwrap())
                .collect();
            let mut keys: Vec<Vec<String>> = (0..groups.num_rows().min(25))
                .filter(|&i| text.iter().all(|t| t.is_valid(i)))
                .map(|i| {
                    text.iter()
                        .map(|t| t.as_string::<i32>().value(i).to_string())
                        .collect()
                })
                .collect();
            keys.push(vec!["no such key".to_string(); state.keys.len()]);
            keys.push(vec!["01".to_string(); state.keys.len()]);
            for key in keys {
                let direct = state.read_key(&key).unwrap();
                assert_eq!(
                    rows(&direct),
                    rows(&state.read_key_by_text(&key).unwrap()),
                    "{key:?}"
                );
            }
        }
        // Folding goes on from a snapshot of the state, restored into a
        // fresh one, as after a restart.
        let snapshot = state.snapshot().unwrap();
        assert_eq!(snapshot.schema(), state.snapshot_schema());
        assert_eq!(snapshot.num_rows(), state.groups());
        let mut restored = State::new(&definition, &ctx.state()).unwrap();
        restored.restore(&[snapshot]).unwrap();
        assert_eq!(rows(&restored.read().unwrap()), rows(&got));
        assert_eq!(restored.groups(), state.groups());
        state = restored;
    }
    assert!(state.bytes() > 0 || state.groups() <= 1);
}

#[tokio::test]
async fn grouped_folds_match_the_query_over_every_event() {
    check(
        "SELECT entity_id, count(*) AS n, count(plan) AS with_plan, sum(qty) AS q, \
                min(amount) AS lo, max(plan) AS hi, avg(amount) AS mean, avg(qty) AS mean_qty, \
                count(DISTINCT plan) AS plans, count(DISTINCT amount) AS amounts, \
                sum(amount) FILTER (WHERE event_type = 'order') AS revenue, \
                last_value(plan ORDER BY position) AS current_plan, \
                first_value(amount ORDER BY timestamp) AS first_amount, \
                last_value(qty ORDER BY timestamp) AS last_qty, \
                sum(qty) * 2 + count(*) AS arithmetic \
         FROM events WHERE event_type <> 'noise' GROUP BY entity_id",
    )
    .await;
}

#[tokio::test]
async fn a_global_projection_is_one_row_even_before_any_event() {
    check("SELECT count(*) AS n, sum(qty) AS q, max(timestamp) AS latest, min(plan) FROM events")
        .await;
}

#[tokio::test]
async fn keys_may_be_expressions_and_several() {
    check(
        "SELECT event_type, date_trunc('day', timestamp) AS day, qty > 10 AS big, count(*) AS n \
         FROM events GROUP BY event_type, date_trunc('day', timestamp), qty > 10",
    )
    .await;
}

#[tokio::test]
async fn an_aliased_table_and_keys_out_of_select_order() {
    check(
        "SELECT count(*) AS n, e.entity_id, sum(e.qty) FILTER (WHERE e.qty > 0) AS positive \
         FROM events e WHERE e.event_type <> 'noise' GROUP BY e.entity_id, event_type",
    )
    .await;
}

#[tokio::test]
async fn nanosecond_keys_and_values_survive_a_snapshot() {
    check(
        "SELECT arrow_cast(date_trunc('hour', timestamp), 'Timestamp(Nanosecond, None)') AS hour, \
                max(arrow_cast(timestamp, 'Timestamp(Nanosecond, None)')) AS latest, \
                count(DISTINCT arrow_cast(timestamp, 'Timestamp(Nanosecond, None)')) AS moments \
         FROM events GROUP BY arrow_cast(date_trunc('hour', timestamp), 'Timestamp(Nanosecond, None)')",
    )
    .await;
}
