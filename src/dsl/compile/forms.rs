//! The analytics forms (`time-series`, `funnel`, `retention`/`cohort`,
//! `anomalies`, `trend`), compiled onto the `udfs` functions as logical
//! plans: aggregates and projections built here, the table functions'
//! providers fed the plan directly.

use super::expr::{Cx, timestamp_lit};
use crate::dsl::ast::{
    Anomalies, Breakdown, Form, FormKind, Funnel, Metric, Node, Retention, Series, TimeSeries,
    Trend,
};
use crate::dsl::keywords::{Aggregation, FormKey};
use crate::dsl::{DslError, Path, engine, strip};
use arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{AggregateUDF, Expr, LogicalPlan, LogicalPlanBuilder, cast, lit};
use std::sync::Arc;
use udfs::udtf::Step;

fn err<T>(path: &Path, message: impl Into<String>) -> Result<T, DslError> {
    Err(DslError::new(path, message))
}

/// Compiles `form` over the rows of `builder`.
pub(super) fn compile(
    cx: &Cx<'_>,
    form: &Form,
    builder: LogicalPlanBuilder,
) -> Result<LogicalPlanBuilder, DslError> {
    let path = &form.path;
    match &form.kind {
        FormKind::TimeSeries(ts) => time_series(cx, ts, builder, path),
        FormKind::Anomalies(a) => anomalies(cx, a, builder, path),
        FormKind::Trend(t) => trend(cx, t, builder, path),
        FormKind::Retention(r) => retention(cx, r, builder, path),
        FormKind::Funnel(f) => funnel(cx, f, builder, path),
    }
}

fn column(cx: &Cx<'_>, name: &Node<String>) -> Result<Expr, DslError> {
    cx.column(&name.item, &name.path)
}

fn step_of(i: IntervalMonthDayNano) -> Step {
    if i.months > 0 {
        Step::Months(i64::from(i.months))
    } else {
        Step::Nanos(i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds)
    }
}

/// The bucket of each row's time; month intervals are 1, 3 or 12 months.
fn bucket(cx: &Cx<'_>, i: IntervalMonthDayNano, time: Expr, path: &Path) -> Result<Expr, DslError> {
    if i.months > 0 {
        let unit = match i.months {
            1 => "month",
            3 => "quarter",
            _ => "year",
        };
        let f = cx.state.udf("date_trunc").map_err(|e| engine(path, e))?;
        return Ok(f.call(vec![lit(unit), time]));
    }
    let f = cx.state.udf("date_bin").map_err(|e| engine(path, e))?;
    Ok(f.call(vec![lit(ScalarValue::IntervalMonthDayNano(Some(i))), time]))
}

/// A form's aggregation, without its alias.
fn aggregation(cx: &Cx<'_>, m: &Metric) -> Result<Expr, DslError> {
    let e = cx.expr(&m.expr)?;
    if find_aggregate_exprs([&e]).is_empty() {
        let all: Vec<&str> = Aggregation::words().collect();
        return err(
            &m.expr.path,
            format!("expected an aggregation: one of {}", all.join(", ")),
        );
    }
    Ok(e.unalias())
}

fn breakdown(cx: &Cx<'_>, by: &[Breakdown]) -> Result<Vec<(Expr, String)>, DslError> {
    by.iter()
        .map(|b| Ok((column(cx, &b.column)?, b.name.clone())))
        .collect()
}

/// A metric over time buckets: the shared core of `time-series`,
/// `anomalies` and `trend`. Columns: `time`, the `by` columns, then one per
/// aggregation; gap-filled over [start, end) when both are given.
fn series(
    cx: &Cx<'_>,
    s: &Series,
    mut builder: LogicalPlanBuilder,
    path: &Path,
    aggs: Vec<(Expr, String)>,
    by: Vec<(Expr, String)>,
) -> Result<LogicalPlanBuilder, DslError> {
    let time = column(cx, &s.time_column)?;
    let range = match &s.range {
        Some((start, end)) => {
            let (from, to) = (cx.instant(start)?, cx.instant(end)?);
            if to <= from {
                return err(&end.path, "end must be after start");
            }
            Some((from, to))
        }
        None => None,
    };
    if let Some((from, to)) = range {
        let bounds = time
            .clone()
            .gt_eq(timestamp_lit(from))
            .and(time.clone().lt(timestamp_lit(to)));
        builder = builder.filter(bounds).map_err(|e| engine(path, e))?;
    }
    let mut group = vec![bucket(
        cx,
        s.interval,
        time,
        &path.key(FormKey::Interval.word()),
    )?];
    group.extend(by.iter().map(|b| b.0.clone()));
    // The same aggregation twice (under two names) is computed once: an
    // aggregate's output columns are named after their expressions.
    let mut distinct: Vec<Expr> = Vec::new();
    let mut slot = Vec::with_capacity(aggs.len());
    for (e, _) in &aggs {
        slot.push(match distinct.iter().position(|d| d == e) {
            Some(i) => i,
            None => {
                distinct.push(e.clone());
                distinct.len() - 1
            }
        });
    }
    let keys = group.len();
    builder = builder
        .aggregate(group, distinct)
        .map_err(|e| engine(path, e))?;
    let cols = builder.schema().columns();
    let column = |i: usize, name: &str| Expr::Column(cols[i].clone()).alias(name);
    let projected: Vec<Expr> = std::iter::once(column(0, "time"))
        .chain(by.iter().enumerate().map(|(i, b)| column(1 + i, &b.1)))
        .chain(aggs.iter().zip(&slot).map(|(a, i)| column(keys + i, &a.1)))
        .collect();
    builder = builder.project(projected).map_err(|e| engine(path, e))?;
    let by_names: Vec<String> = by.into_iter().map(|b| b.1).collect();
    match range {
        Some((from, to)) => {
            let plan = builder.build().map_err(|e| engine(path, e))?;
            let ns = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().unwrap_or_default();
            let provider = udfs::gapfill::gapfill_provider(
                plan,
                "time",
                step_of(s.interval),
                ns(from),
                ns(to),
                s.fill,
                &by_names,
            )
            .map_err(|e| DslError::new(path, strip(e)))?;
            scan("series", provider, path)
        }
        None => {
            let mut sorts: Vec<_> = by_names
                .iter()
                .map(|n| Expr::Column(Column::from_name(n)).sort(true, false))
                .collect();
            sorts.push(Expr::Column(Column::from_name("time")).sort(true, false));
            builder.sort(sorts).map_err(|e| engine(path, e))
        }
    }
}

/// One metric per bucket, as columns `time` and `value`: the input of
/// `anomalies` and `trend`.
fn metric_series(
    cx: &Cx<'_>,
    s: &Series,
    builder: LogicalPlanBuilder,
    path: &Path,
    metric: Expr,
) -> Result<LogicalPlan, DslError> {
    // Filling with zeros means "no value is 0": a bucket whose metric is
    // NULL (say, a sum over only NULL amounts) gets 0 like an empty one,
    // rather than being left out of the series and leaving a hole.
    let metric = match s.fill {
        udfs::gapfill::Fill::Zero => datafusion::functions::expr_fn::coalesce(vec![metric, lit(0)]),
        _ => metric,
    };
    series(cx, s, builder, path, vec![(metric, "value".into())], vec![])?
        .build()
        .map_err(|e| engine(path, e))
}

fn scan(
    name: &str,
    provider: Arc<dyn datafusion::catalog::TableProvider>,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    LogicalPlanBuilder::scan(name, provider_as_source(provider), None).map_err(|e| engine(path, e))
}

fn time_series(
    cx: &Cx<'_>,
    ts: &TimeSeries,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let aggs = ts
        .aggregations
        .iter()
        .map(|m| Ok((aggregation(cx, m)?, m.name.clone())))
        .collect::<Result<Vec<_>, DslError>>()?;
    let by = breakdown(cx, &ts.by)?;
    series(cx, &ts.series, builder, path, aggs, by)
}

fn anomalies(
    cx: &Cx<'_>,
    a: &Anomalies,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let metric = aggregation(cx, &a.metric)?;
    let plan = metric_series(cx, &a.series, builder, path, metric)?;
    let provider =
        udfs::detect_anomalies::detect_anomalies_provider(plan, "value", a.method, a.sensitivity)
            .map_err(|e| DslError::new(path, strip(e)))?;
    scan("anomalies", provider, path)
}

fn trend(
    cx: &Cx<'_>,
    t: &Trend,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let metric = aggregation(cx, &t.metric)?;
    let plan = metric_series(cx, &t.series, builder, path, metric)?;
    let provider = udfs::trend::trend_provider(plan, "time", "value", t.periods, t.method)
        .map_err(|e| DslError::new(path, strip(e)))?;
    scan("trend", provider, path)
}

fn retention(
    cx: &Cx<'_>,
    r: &Retention,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let joined = cx.expr(&r.cohort_event)?;
    let returned = cx.expr(&r.return_event)?;
    let entity = column(cx, &r.entity)?;
    let time = column(cx, &r.time_column)?;
    let plan = builder
        .project(vec![
            entity.alias("entity"),
            time.alias("time"),
            joined.alias("is_cohort_event"),
            returned.alias("is_return_event"),
        ])
        .and_then(|b| b.build())
        .map_err(|e| engine(path, e))?;
    let provider = udfs::cohorts::cohorts_provider(plan, r.period, r.periods)
        .map_err(|e| DslError::new(path, strip(e)))?;
    scan("cohorts", provider, path)
}

/// `funnel`: users per step, conversion from the previous step and from
/// the first, and the median seconds from the previous step.
fn funnel(
    cx: &Cx<'_>,
    f: &Funnel,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let steps = f
        .steps
        .iter()
        .map(|s| cx.expr(s))
        .collect::<Result<Vec<_>, _>>()?;
    let entity = column(cx, &f.entity)?;
    let time = column(cx, &f.time_column)?;
    let by = breakdown(cx, f.breakdown.as_slice())?;
    let n = steps.len();
    let mut args = vec![lit(ScalarValue::IntervalMonthDayNano(Some(f.window)))];
    if let Some(mode) = &f.mode {
        args.push(lit(mode.clone()));
    }
    args.push(time);
    args.extend(steps);
    let funnel_steps = cx.state.udaf("funnel_steps").map_err(|e| engine(path, e))?;
    let agg = |f: &Arc<AggregateUDF>, args: Vec<Expr>| {
        Expr::AggregateFunction(AggregateFunction::new_udf(
            f.clone(),
            args,
            false,
            None,
            vec![],
            None,
        ))
    };
    let mut group = vec![entity];
    group.extend(by.iter().map(|b| b.0.clone()));
    let per_entity = builder
        .aggregate(group, vec![agg(&funnel_steps, args).alias("f")])
        .map_err(|e| engine(path, e))?;

    let get = cx.state.udf("get_field").map_err(|e| engine(path, e))?;
    let field = |name: &str| get.call(vec![Expr::Column(Column::from_name("f")), lit(name)]);
    let mut aggs = Vec::new();
    let sum = cx.state.udaf("sum").map_err(|e| engine(path, e))?;
    let median = cx.state.udaf("median").map_err(|e| engine(path, e))?;
    for k in 1..=n {
        let reached = cast(field("level").gt_eq(lit(k as u8)), DataType::Int64);
        aggs.push(agg(&sum, vec![reached]).alias(format!("users_{k}")));
    }
    for k in 2..=n {
        let micros = |s: usize| cast(field(&format!("step_{s}")), DataType::Int64);
        let seconds = cast(micros(k) - micros(k - 1), DataType::Float64) / lit(1e6);
        aggs.push(agg(&median, vec![seconds]).alias(format!("median_{k}")));
    }
    let by_cols: Vec<Expr> = by
        .iter()
        .map(|b| match &b.0 {
            Expr::Column(c) => Expr::Column(Column::from_name(c.name.clone())),
            other => other.clone(),
        })
        .collect();
    let wide = per_entity
        .aggregate(by_cols, aggs)
        .map_err(|e| engine(path, e))?
        .build()
        .map_err(|e| engine(path, e))?;
    let nullif = cx.state.udf("nullif").map_err(|e| engine(path, e))?;
    let users = |k: usize| {
        cast(
            Expr::Column(Column::from_name(format!("users_{k}"))),
            DataType::Float64,
        )
    };
    let mut out: Option<LogicalPlanBuilder> = None;
    for k in 1..=n {
        let mut cols: Vec<Expr> = by
            .iter()
            .map(|b| Expr::Column(Column::from_name(b.1.clone())))
            .collect();
        cols.push(lit(k as i64).alias("step"));
        cols.push(Expr::Column(Column::from_name(format!("users_{k}"))).alias("users"));
        let prev = if k == 1 { 1 } else { k - 1 };
        cols.push((users(k) / nullif.call(vec![users(prev), lit(0.0)])).alias("conversion"));
        cols.push((users(k) / nullif.call(vec![users(1), lit(0.0)])).alias("conversion_overall"));
        cols.push(if k == 1 {
            lit(ScalarValue::Float64(None)).alias("median_seconds")
        } else {
            Expr::Column(Column::from_name(format!("median_{k}"))).alias("median_seconds")
        });
        let part = LogicalPlanBuilder::from(wide.clone())
            .project(cols)
            .and_then(|b| b.build())
            .map_err(|e| engine(path, e))?;
        out = Some(match out {
            None => LogicalPlanBuilder::from(part),
            Some(b) => b.union(part).map_err(|e| engine(path, e))?,
        });
    }
    let Some(out) = out else {
        return err(
            &path.key(FormKey::Steps.word()),
            "expected at least one step",
        );
    };
    let mut sorts: Vec<_> = by
        .iter()
        .map(|b| Expr::Column(Column::from_name(b.1.clone())).sort(true, false))
        .collect();
    sorts.push(Expr::Column(Column::from_name("step")).sort(true, false));
    out.sort(sorts).map_err(|e| engine(path, e))
}
