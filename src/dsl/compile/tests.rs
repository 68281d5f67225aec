//! The compiler against a small in-memory table: its errors (those that
//! need the schema) at the paths the parser recorded, and plans that run.

use crate::dsl::{QueryError, compile_at};
use chrono::{TimeZone, Utc};
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use std::sync::Arc;

/// A session with `events`: four events an hour apart from 2026-01-01.
fn session() -> SessionContext {
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, true),
    ]));
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let times: Vec<i64> = (0..4)
        .map(|h| (start + chrono::Duration::hours(h)).timestamp_micros())
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["e1", "e2", "e3", "e4"])),
            Arc::new(StringArray::from(vec!["view", "order", "view", "order"])),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Float64Array::from(vec![
                Some(1.0),
                None,
                Some(3.0),
                Some(4.5),
            ])),
        ],
    )
    .unwrap();
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema, vec![vec![batch]]).unwrap();
    ctx.register_table("events", Arc::new(table)).unwrap();
    ctx
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn plan(ctx: &SessionContext, doc: &Value) -> Result<LogicalPlan, QueryError> {
    let now = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
    runtime().block_on(compile_at(ctx, doc, now))
}

/// Errors that need the schema, each at the path of the node it is about.
#[test]
fn compile_errors_name_their_path() {
    let ctx = session();
    let rows: &[(Value, &str)] = &[
        (
            json!({"from": "evnts"}),
            "from: unknown table \"evnts\" (did you mean \"events\"?)",
        ),
        (
            json!({"from": "events", "select": ["event_id", "amout"]}),
            "select[1]: unknown column \"amout\" (did you mean \"amount\"?)",
        ),
        (
            json!({"from": "events", "where": ["=", ["col", "evnt_type"], "x"]}),
            "where[1][1]: unknown column \"evnt_type\" (did you mean \"event_type\"?)",
        ),
        (
            json!({"from": "events", "where": ["=", "amount", "lots"]}),
            "where[2]: \"lots\" is not a number, and the other side is Float64",
        ),
        (
            json!({"from": "events", "where": ["in", "timestamp", ["2026-01-01", "soon"]]}),
            "where[2][1]: \"soon\" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date",
        ),
        (
            json!({"from": "events", "where": [">", ["sum", "amount"], 3]}),
            "where: aggregations are not allowed in where; use having",
        ),
        (
            json!({"from": "events", "group-by": [["count"]]}),
            "group-by[0]: cannot group by an aggregation",
        ),
        (
            json!({"from": "events", "select": ["event_id", ["count"]]}),
            "select[0]: \"event_id\" must be in group-by or inside an aggregation",
        ),
        (
            json!({"from": "events", "select": ["event_id"], "having": ["=", "event_id", "x"]}),
            "having: having needs group-by or an aggregation",
        ),
        (
            json!({"from": "events", "select": [["fn", "uper", "event_type"]]}),
            "select[0][1]: unknown function \"uper\" (did you mean \"upper\"?)",
        ),
        (
            json!({"from": "events", "select": [["payload", "amout", "x"]]}),
            "select[0]: unknown payload field \"amout\" (did you mean \"amount\"?)",
        ),
        (
            json!({"from": "events", "select": [["count"]], "order-by": [["desc", ["count"]]]}),
            "order-by[0][1]: order by an aggregation's name: give it one with [\"as\", ...] in select",
        ),
        (
            json!({"from": "events", "trend": {"metric": ["count"], "interval": "1 hour"}, "order-by": ["tim"]}),
            "order-by[0]: unknown column \"tim\"; the result has time, value, fitted, is_forecast, slope, intercept, r2, alpha, beta (did you mean \"time\"?)",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": [["count"]]}, "order-by": [["asc", ["count"]]]}),
            "order-by[0][1]: unknown column \"?\"; the result has time, count",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": ["amount"]}}),
            "time-series.aggregations[0]: expected an aggregation: one of count, sum, avg, min, max, stddev, variance, percentile, median, count-distinct, approx-count-distinct, approx-percentile, first, last",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": [["count"]], "time-column": "tme"}}),
            "time-series.time-column: unknown column \"tme\"",
        ),
        (
            json!({"from": "events", "time-series": {"interval": "1 hour", "aggregations": [["count"]], "start": ["now"], "end": ["days-ago", 1]}}),
            "time-series.end: end must be after start",
        ),
        (
            json!({"from": "events", "funnel": {"steps": [true], "window": "1 day", "entity": "user"}}),
            "funnel.entity: unknown column \"user\"",
        ),
    ];
    let mut wrong = Vec::new();
    for (doc, want) in rows {
        let got = match plan(&ctx, doc) {
            Ok(_) => "compiled".to_string(),
            Err(QueryError::Dsl(e)) => e.to_string(),
            Err(QueryError::Engine(e)) => format!("engine: {e}"),
        };
        if got != *want {
            wrong.push(format!("{doc}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// One aggregation under two names is computed once and shown twice (an
/// aggregate cannot output two columns of the same expression).
#[test]
fn a_time_series_may_name_one_aggregation_twice() {
    let ctx = session();
    let doc = json!({"from": "events", "time-series": {"interval": "2 hours",
        "aggregations": [["as", ["count"], "a"], ["sum", "amount"], ["as", ["count"], "b"]]}});
    let plan = plan(&ctx, &doc).unwrap();
    let batches = runtime()
        .block_on(async { ctx.execute_logical_plan(plan).await?.collect().await })
        .unwrap();
    let out = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let expected = "\
+----------------------+---+------------+---+
| time                 | a | sum_amount | b |
+----------------------+---+------------+---+
| 2026-01-01T00:00:00Z | 2 | 1.0        | 2 |
| 2026-01-01T02:00:00Z | 2 | 7.5        | 2 |
+----------------------+---+------------+---+";
    assert_eq!(out, expected);
}

/// Two aliases of one group key are one column of the aggregate, selected
/// under both names.
#[test]
fn a_group_key_may_have_two_aliases() {
    let ctx = session();
    let doc = json!({"from": "events",
        "group-by": [["as", ["fn", "upper", "event_type"], "g0"], ["as", ["fn", "upper", "event_type"], "g1"]],
        "select": ["g0", "g1", ["as", ["count"], "n"]],
        "having": [">", ["count"], 0],
        "order-by": ["g0"]});
    let plan = plan(&ctx, &doc).unwrap();
    let batches = runtime()
        .block_on(async { ctx.execute_logical_plan(plan).await?.collect().await })
        .unwrap();
    let out = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    let expected = "\
+-------+-------+---+
| g0    | g1    | n |
+-------+-------+---+
| ORDER | ORDER | 2 |
| VIEW  | VIEW  | 2 |
+-------+-------+---+";
    assert_eq!(out, expected);
}
