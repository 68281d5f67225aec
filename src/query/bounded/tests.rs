use super::*;
use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionConfig;
use parking_lot::Mutex;
use std::collections::HashMap;

fn session_with(pool: Arc<dyn MemoryPool>) -> SessionContext {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(pool)
        .build_arc()
        .unwrap();
    let state = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2))
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(OperatorMemory))
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    register(&mut ctx).unwrap();
    ctx
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    ctx.sql(sql).await?.collect().await
}

/// A pool that grants everything and sums what each consumer asked for.
#[derive(Debug, Default)]
struct Recording {
    wanted: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Display for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "recording pool")
    }
}

impl MemoryPool for Recording {
    fn name(&self) -> &str {
        "recording"
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        let _ = self.try_grow(reservation, additional);
    }

    fn shrink(&self, _reservation: &MemoryReservation, _shrink: usize) {}

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        *self
            .wanted
            .lock()
            .entry(reservation.consumer().name().to_string())
            .or_default() += additional;
        Ok(())
    }

    fn reserved(&self) -> usize {
        0
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Infinite
    }
}

#[test]
fn every_bounded_function_is_a_builtin() {
    let ctx = SessionContext::new();
    let state = ctx.state();
    for (name, _) in BOUNDED {
        let f = state
            .scalar_functions()
            .get(*name)
            .unwrap_or_else(|| panic!("{name} is not a DataFusion function"));
        assert_eq!(f.name(), *name, "{name} is an alias: wrap its function");
    }
    let ctx = session_with(Arc::new(GreedyMemoryPool::new(1 << 20)));
    let state = ctx.state();
    for (name, _) in BOUNDED {
        let f = &state.scalar_functions()[*name];
        assert!(
            f.inner().downcast_ref::<Bounded>().is_some(),
            "{name} is not bounded"
        );
        for alias in f.aliases() {
            assert!(
                state.scalar_functions()[alias]
                    .inner()
                    .downcast_ref::<Bounded>()
                    .is_some(),
                "{alias} is not bounded"
            );
        }
    }
}

/// Each function's reservation covers the bytes of what it returned, over
/// rows of every shape: ASCII and wider text, empty, NULL.
#[tokio::test]
async fn reservations_cover_the_output() {
    let calls = [
        ("repeat", "repeat(s, n)"),
        ("lpad", "lpad(s, n * 3, 'é')"),
        ("rpad", "rpad(s, n)"),
        ("replace", "replace(s, 'b', 'xyz')"),
        ("replace", "replace(s, '', 'xy')"),
        ("regexp_replace", "regexp_replace(s, '(b)', '$1$1-', 'g')"),
        ("regexp_replace", "regexp_replace(s, '', 'Q', 'g')"),
        ("regexp_match", "regexp_match(s, '(a)(b)?')"),
        ("concat", "concat(s, s, s, 'tail')"),
        ("concat_ws", "concat_ws(s, s, s, s)"),
        ("array_repeat", "array_repeat(s, n)"),
        ("array_resize", "array_resize(make_array(n), n * 2, 7)"),
        ("range", "range(n)"),
        ("range", "range(0, n * 5, 2)"),
        ("generate_series", "generate_series(n, 0, -1)"),
        (
            "range",
            "range(DATE '2024-01-01', arrow_cast(arrow_cast(19723 + n * 30, 'Int32'), 'Date32'), INTERVAL '1 day')",
        ),
        (
            "generate_series",
            "generate_series(TIMESTAMP '2024-01-01', to_timestamp(1704067200 + n * 2600000), INTERVAL '1 month 1 day')",
        ),
        ("string_to_array", "string_to_array(s, '')"),
        ("string_to_array", "string_to_array(s, 'b')"),
        ("array_to_string", "array_to_string(range(n), s)"),
        (
            "array_to_string",
            "array_to_string(make_array(s, s), '--', 'null')",
        ),
        (
            "array_replace_all",
            "array_replace_all(array_repeat(range(1), 5), range(1), range(n))",
        ),
        (
            "array_replace_n",
            "array_replace_n(array_repeat(s, 4), s, concat(s, s), 3)",
        ),
        ("array_replace", "array_replace(array_repeat(n, 4), n, 1)"),
        ("array_concat", "array_concat(range(n), range(n), range(n))"),
        ("make_array", "make_array(s, s, s)"),
        ("arrays_zip", "arrays_zip(range(n), range(n * 2))"),
    ];
    let values =
        "(VALUES ('abcb', 3), ('', 0), (NULL, 5), ('ééb', 10), ('bbbbbbbb', 7)) AS t(s, n)";
    for (name, call) in calls {
        let pool = Arc::new(Recording::default());
        let ctx = session_with(pool.clone());
        let batches = run(&ctx, &format!("SELECT {call} AS v FROM {values}"))
            .await
            .unwrap_or_else(|e| panic!("{call}: {e}"));
        let out: usize = batches
            .iter()
            .map(|b| b.column(0).to_data().get_slice_memory_size().unwrap())
            .sum();
        let wanted = pool
            .wanted
            .lock()
            .get(&format!("{name}()"))
            .copied()
            .unwrap_or_else(|| panic!("{call}: {name} reserved nothing"));
        assert!(
            wanted >= out,
            "{call}: reserved {wanted} bytes for an output of {out}"
        );
    }
}

#[tokio::test]
async fn a_call_over_the_budget_is_refused_before_it_runs() {
    let ctx = session_with(Arc::new(GreedyMemoryPool::new(1 << 20)));
    for sql in [
        "SELECT length(repeat(arrow_cast('x', 'LargeUtf8'), 3000000000))",
        "SELECT cardinality(range(1, 100000000))",
        "SELECT array_to_string(range(100000), repeat('-', 100000))",
        "SELECT length(replace(repeat('x', 10000), '', repeat('y', 10000)))",
        "SELECT cardinality(array_repeat(repeat('x', 1000), 1000000))",
        "SELECT length(lpad('', 2000000000))",
        "SELECT length(concat(repeat('x', 300000), repeat('x', 300000), repeat('x', 300000), repeat('x', 300000)))",
    ] {
        let e = run(&ctx, sql).await.unwrap_err();
        assert!(
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)),
            "{sql}: {e}"
        );
        assert!(e.to_string().contains("()"), "{sql}: {e}");
    }
    // The same functions on ordinary values.
    let batches = run(
        &ctx,
        "SELECT repeat('ab', 3) AS r, cardinality(range(1, 1000)) AS n, concat('a', 'b') AS c",
    )
    .await
    .unwrap();
    let out = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(out.contains("| ababab | 999 | ab |"), "{out}");
}

#[tokio::test]
async fn operators_reserve_the_rows_they_hold_or_repeat() {
    let ctx = session_with(Arc::new(GreedyMemoryPool::new(1 << 20)));
    for (sql, operator) in [
        (
            "SELECT max(s) FROM (SELECT sum(value) OVER () AS s FROM range(1000000))",
            "WindowAggExec",
        ),
        (
            "SELECT max(length(s)) FROM (SELECT s, unnest(range(1, 2000)) AS x FROM (SELECT repeat('x', 2000) AS s))",
            "UnnestExec",
        ),
    ] {
        let e = run(&ctx, sql).await.unwrap_err();
        assert!(
            matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
                && e.to_string().contains(operator),
            "{sql}: {e}"
        );
    }
    // Streaming windows give back what they emit; small unnests fit.
    for sql in [
        "SELECT count(*) FROM (SELECT row_number() OVER (PARTITION BY value % 7 ORDER BY value) AS r FROM range(300000))",
        "SELECT count(*) FROM (SELECT value, unnest(range(1, 50)) AS x FROM range(20000))",
        "SELECT count(*) FROM (SELECT sum(value) OVER () AS s FROM range(1000))",
    ] {
        run(&ctx, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
