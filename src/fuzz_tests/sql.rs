//! SQL, differentially: each generated query ([`super::sql_gen`]) runs in
//! two sessions of the fixture's tenant: the plainest plan (1 partition,
//! no dynamic filters pushed into the scans) and the server's (4
//! partitions, its defaults). Both must return the same rows (as
//! multisets, or in order when the query orders them totally; floats
//! within a relative 1e-5, see `compare`), or both refuse it with a 4xx. No panic, no
//! internal error, no 5xx.

use super::compare::{Rows, difference, refusal};
use super::fixture::Fixture;
use super::sql_gen::{Query, query};
use super::{Tally, cases, run};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Plans `sql` as the server does (read-only) and collects its rows.
async fn execute(ctx: &SessionContext, sql: &str) -> Result<Rows, DataFusionError> {
    let plan = crate::query::plan_sql(ctx, sql).await?;
    let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
    Rows::of(&batches)
}

/// A session of one partition whose TopKs, joins and aggregates push no
/// dynamic filters into the scans below them.
fn plain_session(fixture: &Fixture) -> SessionContext {
    let ctx = fixture.session(1);
    let state = ctx.state_ref();
    let mut state = state.write();
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.enable_dynamic_filter_pushdown = false;
    optimizer.enable_topk_dynamic_filter_pushdown = false;
    optimizer.enable_join_dynamic_filter_pushdown = false;
    optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    drop(state);
    ctx
}

/// Runs `query` in the plain session and with 4 partitions and checks
/// that they agree.
fn check(fixture: &Fixture, query: &Query, tally: &Tally) -> Result<(), TestCaseError> {
    let (one, four) = fixture.runtime.block_on(async {
        let one = execute(&plain_session(fixture), &query.sql).await;
        let four = execute(&fixture.session(4), &query.sql).await;
        (one, four)
    });
    match (one, four) {
        (Ok(a), Ok(b)) => {
            if let Some(d) = difference(&a, &b, query.ordered) {
                return Err(TestCaseError::fail(format!(
                    "the plain plan and the server's differ: {d}\n{}",
                    query.sql
                )));
            }
            tally.add(if a.rows.is_empty() {
                "ok (no rows)"
            } else {
                "ok"
            });
        }
        (Err(a), Err(b)) => {
            let (a, b) = (refusal(a), refusal(b));
            prop_assert!(
                !a.is_fault() && !b.is_fault(),
                "{} / {}\n{}",
                a.message,
                b.message,
                query.sql
            );
            tally.add(format!("refused {:?} {}", a.class, a.kind));
        }
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            return Err(TestCaseError::fail(format!(
                "only one of the plain plan and the server's fails ({e})\n{}",
                query.sql
            )));
        }
    }
    Ok(())
}

#[test]
fn fuzz_sql_partitions() {
    let cases = cases(40);
    let fixture = Fixture::new();
    let tally = Tally::new("sql");
    run(cases, &query(), |q| check(&fixture, &q, &tally));
    tally.report(cases);
}

/// [`check`] of one query (a fuzz finding) on a fresh fixture.
fn check_one(sql: &str, ordered: bool) {
    let query = Query {
        sql: sql.into(),
        ordered,
    };
    check(&Fixture::new(), &query, &Tally::new("sql")).unwrap();
}

/// A covariance over epoch seconds: inputs near 1.8e9 that differ by
/// less than a second keep about 7 significant digits of their spread,
/// so one partition and four agree to about 1e-6, not to 1e-9.
#[test]
fn spreads_of_epoch_seconds_agree_within_their_precision() {
    check_one(
        "SELECT a.entity_id AS k, covar_samp(round(a.amount, 1), date_part('epoch', a.ingested_at)) AS x, count(DISTINCT lower(b.tags)) AS y FROM events a JOIN small b ON a.entity_id = b.entity_id AND a.event_id <> b.event_id WHERE a.vip GROUP BY a.entity_id",
        false,
    );
}

/// Signed zeros (`late % late` of a negative `late` is -0.0) among the
/// sort keys of a TopK.
#[test]
fn signed_zeros_sort_alike() {
    check_one(
        "SELECT character_length(md5('ünï')) AS c0, coalesce(qty, (late % nullif(late, 0))) AS c1, least((- amount), nullif((13 / nullif(late, 0)), nullif(qty, amount))) AS c2 FROM events ORDER BY c0, c1, c2 DESC, event_id LIMIT 6 OFFSET 4",
        true,
    );
}

/// A filter on the side of an outer join that gets NULLs, under a
/// grouping by that side's key: one partition returned the key's group
/// twice.
#[test]
fn outer_join_keys_are_not_taken_for_constants() {
    check_one(
        "SELECT a.entity_id AS k, count(*) AS x, sum(b.amount) FILTER (WHERE b.vip) AS y FROM events a RIGHT JOIN events b ON a.entity_id = b.entity_id AND a.event_id <> b.event_id AND (b.entity_id = 'u1') GROUP BY a.entity_id",
        false,
    );
}

/// A filter whose interval analysis over the timestamp bounds of the
/// stored files estimated a selectivity a rounding error above 1, which
/// DataFusion's planner took for an internal error. Whether it did depends
/// on the `ingested_at` bounds, so on the time the fixture was written:
/// one fixture in about 14 failed, and this tries 60.
#[test]
fn a_selectivity_rounded_above_one_is_not_an_internal_error() {
    let sql = "SELECT amount AS x, event_type AS y FROM events UNION ALL SELECT amount AS x, event_type AS y FROM events WHERE (CAST((timestamp >= ingested_at) AS INT) = (amount + amount))";
    for _ in 0..60 {
        let fixture = Fixture::new();
        if let Err(e) = fixture.runtime.block_on(execute(&fixture.session(4), sql)) {
            panic!("{e}");
        }
    }
}

/// A NaN with its sign bit set (NaN / -NaN) among a grouping set's
/// inputs to `min`.
#[test]
fn min_over_negative_nans_agrees() {
    check_one(
        "SELECT amount AS g0, min((amount / nullif((- amount), 0))) AS a0 FROM events GROUP BY ROLLUP(amount)",
        false,
    );
}

/// Two equal select expressions under DISTINCT, ordered and limited: the
/// partition-wise TopK sorts on the first alone (they are equal), which
/// the plan check must accept above the aggregate that groups by both.
#[test]
fn distinct_equal_expressions_ordered_and_limited() {
    for sql in [
        "SELECT DISTINCT json_get_int(tags, 0) AS c0, json_get_int(tags, 0) AS c1 FROM events WHERE (concat_ws('-', right(event_id, 0), entity_id) >= CAST(substr('it''s', 4, 0) AS VARCHAR)) ORDER BY c0, c1 LIMIT 1",
        "SELECT DISTINCT timestamp AS c0, timestamp AS c1 FROM events WHERE starts_with(split_part(concat_ws('-', tags, note), '.', 2), 'e') ORDER BY c0, c1 LIMIT 1",
        "SELECT DISTINCT json_get_int(tags, 0) AS c0, json_get_int(tags, 0) AS c1 FROM events WHERE (concat_ws('-', right(event_id, 0), entity_id) >= CAST(substr('it''s', 4, 0) AS VARCHAR)) ORDER BY c0, c1 DESC LIMIT 1",
    ] {
        check_one(sql, true);
    }
}
