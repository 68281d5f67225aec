//! The analytics forms of the DSL (`time-series`, `funnel`,
//! `retention`/`cohort`, `anomalies`, `trend`), compiled onto the `udfs`
//! functions as logical plans: aggregates and projections built here, the
//! table functions' providers fed the plan directly.

use super::expr::{AGGREGATIONS, Cx, default_name, suggest};
use super::{DslError, Path, engine};
use arrow::compute::kernels::cast_utils::parse_interval_month_day_nano;
use arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::provider_as_source;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::utils::find_aggregate_exprs;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, lit};
use serde_json::{Map, Value};
use udfs::anomaly::Method;
use udfs::cohorts::Period;
use udfs::gapfill::Fill;
use udfs::trend::TrendMethod;
use udfs::udtf::Step;

fn err<T>(path: &Path, message: impl Into<String>) -> Result<T, DslError> {
    Err(DslError::new(path, message))
}

/// The form's object, with its keys checked.
fn object<'a>(
    spec: &'a Value,
    path: &Path,
    keys: &[&str],
) -> Result<&'a Map<String, Value>, DslError> {
    let Value::Object(map) = spec else {
        return err(path, "expected an object");
    };
    for k in map.keys() {
        if !keys.contains(&k.as_str()) {
            return err(
                &path.key(k),
                format!(
                    "unknown key \"{k}\"{}; this form takes {}",
                    suggest(k, keys.iter().copied()),
                    keys.join(", ")
                ),
            );
        }
    }
    Ok(map)
}

fn required<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<&'a Value, DslError> {
    map.get(key)
        .ok_or_else(|| DslError::new(&path.key(key), "missing"))
}

fn string<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<&'a str>, DslError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => err(&path.key(key), "expected a string"),
    }
}

fn number(map: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<f64>, DslError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| DslError::new(&path.key(key), "expected a number")),
    }
}

fn whole(
    map: &Map<String, Value>,
    key: &str,
    path: &Path,
    max: u64,
) -> Result<Option<u64>, DslError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            _ => err(
                &path.key(key),
                format!("expected a whole number from 0 to {max}"),
            ),
        },
    }
}

/// An interval: a string such as "1 hour" or "15 minutes", or a number of
/// seconds.
fn interval(v: &Value, path: &Path) -> Result<IntervalMonthDayNano, DslError> {
    let parsed = match v {
        Value::String(s) => parse_interval_month_day_nano(s).ok(),
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| IntervalMonthDayNano::new(0, 0, (s * 1e9) as i64)),
        _ => None,
    };
    match parsed {
        Some(i)
            if (i.months > 0 && i.days == 0 && i.nanoseconds == 0)
                || (i.months == 0
                    && (i.days > 0 || i.nanoseconds > 0)
                    && i.days >= 0
                    && i.nanoseconds >= 0) =>
        {
            Ok(i)
        }
        _ => err(
            path,
            "expected a positive interval such as \"1 hour\", \"15 minutes\", \"1 day\" or \"1 month\", or a number of seconds",
        ),
    }
}

fn step_of(i: IntervalMonthDayNano) -> Step {
    if i.months > 0 {
        Step::Months(i64::from(i.months))
    } else {
        Step::Nanos(i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds)
    }
}

fn time_column(cx: &Cx<'_>, map: &Map<String, Value>, path: &Path) -> Result<Expr, DslError> {
    let name = string(map, "time-column", path)?.unwrap_or("timestamp");
    cx.column(name, &path.key("time-column"))
}

/// The bucket of each row's time.
fn bucket(cx: &Cx<'_>, i: IntervalMonthDayNano, time: Expr, path: &Path) -> Result<Expr, DslError> {
    if i.months > 0 {
        let unit = match i.months {
            1 => "month",
            3 => "quarter",
            12 => "year",
            _ => return err(path, "month intervals must be 1, 3 or 12 months"),
        };
        let f = cx.state.udf("date_trunc").map_err(|e| engine(path, e))?;
        return Ok(f.call(vec![lit(unit), time]));
    }
    let f = cx.state.udf("date_bin").map_err(|e| engine(path, e))?;
    Ok(f.call(vec![lit(ScalarValue::IntervalMonthDayNano(Some(i))), time]))
}

/// An aggregation of a form, and the name of its column.
fn aggregation(cx: &Cx<'_>, v: &Value, path: &Path) -> Result<(Expr, String), DslError> {
    let e = cx.expr(v, path)?;
    if find_aggregate_exprs([&e]).is_empty() {
        return err(
            path,
            format!(
                "expected an aggregation: one of {}",
                AGGREGATIONS.join(", ")
            ),
        );
    }
    let name = match &e {
        Expr::Alias(a) => a.name.clone(),
        _ => default_name(v),
    };
    Ok((e.unalias(), name))
}

/// A metric over time buckets: the shared core of `time-series`,
/// `anomalies` and `trend`. Columns: `time`, the `by` columns, then one per
/// aggregation; gap-filled over [start, end) when both are given.
fn series(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    mut builder: LogicalPlanBuilder,
    path: &Path,
    aggs: Vec<(Expr, String)>,
    by: Vec<(Expr, String)>,
    default_fill: Fill,
) -> Result<LogicalPlanBuilder, DslError> {
    let ipath = path.key("interval");
    let i = interval(required(map, "interval", path)?, &ipath)?;
    let time = time_column(cx, map, path)?;
    let start = map
        .get("start")
        .map(|v| cx.instant(v, &path.key("start")))
        .transpose()?;
    let end = map
        .get("end")
        .map(|v| cx.instant(v, &path.key("end")))
        .transpose()?;
    let fill = match string(map, "fill", path)? {
        Some(f) => Fill::parse(f).map_err(|e| DslError::new(&path.key("fill"), strip(e)))?,
        None => default_fill,
    };
    let range = match (start, end) {
        (Some(s), Some(e)) if e > s => Some((s, e)),
        (Some(_), Some(_)) => return err(&path.key("end"), "end must be after start"),
        (None, None) => None,
        (Some(_), None) => {
            return err(
                &path.key("end"),
                "missing: give both start and end, or neither",
            );
        }
        (None, Some(_)) => {
            return err(
                &path.key("start"),
                "missing: give both start and end, or neither",
            );
        }
    };
    if let Some((s, e)) = range {
        let bounds = time
            .clone()
            .gt_eq(super::expr::timestamp_lit(s))
            .and(time.clone().lt(super::expr::timestamp_lit(e)));
        builder = builder.filter(bounds).map_err(|e| engine(path, e))?;
    }
    let mut names: Vec<&str> = vec!["time"];
    for n in by
        .iter()
        .map(|b| b.1.as_str())
        .chain(aggs.iter().map(|a| a.1.as_str()))
    {
        if names.contains(&n) {
            return err(
                path,
                format!(
                    "two columns would be called \"{n}\"; name one with [\"as\", ..., \"name\"]"
                ),
            );
        }
        names.push(n);
    }
    let mut group = vec![bucket(cx, i, time, &ipath)?];
    group.extend(by.iter().map(|b| b.0.clone()));
    let agg_exprs: Vec<Expr> = aggs.iter().map(|a| a.0.clone()).collect();
    builder = builder
        .aggregate(group, agg_exprs)
        .map_err(|e| engine(path, e))?;
    let cols = builder.schema().columns();
    let projected: Vec<Expr> = cols
        .into_iter()
        .zip(names.iter())
        .map(|(c, n)| Expr::Column(c).alias(*n))
        .collect();
    builder = builder.project(projected).map_err(|e| engine(path, e))?;
    let by_names: Vec<String> = by.into_iter().map(|b| b.1).collect();
    match range {
        Some((s, e)) => {
            let plan = builder.build().map_err(|e| engine(path, e))?;
            let ns = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().unwrap_or_default();
            let provider = udfs::gapfill::gapfill_provider(
                plan,
                "time",
                step_of(i),
                ns(s),
                ns(e),
                fill,
                &by_names,
            )
            .map_err(|e| DslError::new(path, strip(e)))?;
            LogicalPlanBuilder::scan("series", provider_as_source(provider), None)
                .map_err(|e| engine(path, e))
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

/// One metric per bucket, as columns `time` and `value`, zero-filled over
/// [start, end) when given: the input of `anomalies` and `trend`.
fn metric_series(
    cx: &Cx<'_>,
    map: &Map<String, Value>,
    builder: LogicalPlanBuilder,
    path: &Path,
    metric: Expr,
) -> Result<LogicalPlan, DslError> {
    series(
        cx,
        map,
        builder,
        path,
        vec![(metric, "value".into())],
        vec![],
        Fill::Zero,
    )?
    .build()
    .map_err(|e| engine(path, e))
}

fn strip(e: datafusion::error::DataFusionError) -> String {
    match e.strip_backtrace() {
        s if s.starts_with("Error during planning: ") => {
            s["Error during planning: ".len()..].to_string()
        }
        s => s,
    }
}

/// The `by` (breakdown) columns.
fn breakdown(cx: &Cx<'_>, v: Option<&Value>, path: &Path) -> Result<Vec<(Expr, String)>, DslError> {
    let items: Vec<(&Value, Path)> = match v {
        None => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (v, path.index(i)))
            .collect(),
        Some(v) => vec![(v, path.clone())],
    };
    items
        .into_iter()
        .map(|(v, p)| match v {
            Value::String(name) => Ok((cx.column(name, &p)?, name.replace('.', "_"))),
            _ => err(&p, "expected a column name"),
        })
        .collect()
}

fn scan(
    name: &str,
    provider: std::sync::Arc<dyn datafusion::catalog::TableProvider>,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    LogicalPlanBuilder::scan(name, provider_as_source(provider), None).map_err(|e| engine(path, e))
}

pub(super) fn compile(
    cx: &Cx<'_>,
    form: &str,
    spec: &Value,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    match form {
        "time-series" => {
            let map = object(
                spec,
                path,
                &[
                    "interval",
                    "aggregations",
                    "fill",
                    "start",
                    "end",
                    "by",
                    "time-column",
                ],
            )?;
            let apath = path.key("aggregations");
            let aggs = match required(map, "aggregations", path)? {
                Value::Array(items) if !items.is_empty() => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| aggregation(cx, v, &apath.index(i)))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return err(&apath, "expected a non-empty list of aggregations"),
            };
            let by = breakdown(cx, map.get("by"), &path.key("by"))?;
            series(cx, map, builder, path, aggs, by, Fill::Null)
        }
        "anomalies" => {
            let map = object(
                spec,
                path,
                &[
                    "metric",
                    "interval",
                    "algorithm",
                    "method",
                    "sensitivity",
                    "fill",
                    "start",
                    "end",
                    "time-column",
                ],
            )?;
            let metric = aggregation(cx, required(map, "metric", path)?, &path.key("metric"))?;
            let (key, name) = match (
                string(map, "algorithm", path)?,
                string(map, "method", path)?,
            ) {
                (Some(a), None) => ("algorithm", a),
                (None, Some(m)) => ("method", m),
                (None, None) => ("algorithm", "mad"),
                (Some(_), Some(_)) => {
                    return err(&path.key("method"), "give algorithm or method, not both");
                }
            };
            let method = Method::parse("anomalies", name)
                .map_err(|e| DslError::new(&path.key(key), strip(e)))?;
            let k = match number(map, "sensitivity", path)? {
                Some(k) => udfs::anomaly::check_k("anomalies", k)
                    .map_err(|e| DslError::new(&path.key("sensitivity"), strip(e)))?,
                None => method.default_k(),
            };
            let plan = metric_series(cx, map, builder, path, metric.0)?;
            let provider =
                udfs::detect_anomalies::detect_anomalies_provider(plan, "value", method, k)
                    .map_err(|e| DslError::new(path, strip(e)))?;
            scan("anomalies", provider, path)
        }
        "trend" => {
            let map = object(
                spec,
                path,
                &[
                    "metric",
                    "interval",
                    "periods",
                    "method",
                    "alpha",
                    "beta",
                    "fill",
                    "start",
                    "end",
                    "time-column",
                ],
            )?;
            let metric = aggregation(cx, required(map, "metric", path)?, &path.key("metric"))?;
            let periods = whole(map, "periods", path, udfs::trend::MAX_PERIODS)?.unwrap_or(0);
            let alpha = number(map, "alpha", path)?;
            let beta = number(map, "beta", path)?;
            let method = match string(map, "method", path)?.unwrap_or("linear") {
                "linear" if alpha.is_some() || beta.is_some() => {
                    return err(
                        &path.key("alpha"),
                        "alpha and beta apply only to the holt method",
                    );
                }
                "linear" => TrendMethod::Linear,
                "holt" => match (alpha, beta) {
                    (None, None) => TrendMethod::Holt(None),
                    (Some(a), Some(b)) if a > 0.0 && a <= 1.0 && (0.0..=1.0).contains(&b) => {
                        TrendMethod::Holt(Some((a, b)))
                    }
                    (Some(_), Some(_)) => {
                        return err(
                            &path.key("alpha"),
                            "alpha must be in (0, 1] and beta in [0, 1]",
                        );
                    }
                    _ => {
                        return err(
                            &path.key("alpha"),
                            "give both alpha and beta, or neither to fit them",
                        );
                    }
                },
                other => {
                    return err(
                        &path.key("method"),
                        format!("unknown method \"{other}\"; use \"linear\" or \"holt\""),
                    );
                }
            };
            let plan = metric_series(cx, map, builder, path, metric.0)?;
            let provider = udfs::trend::trend_provider(plan, "time", "value", periods, method)
                .map_err(|e| DslError::new(path, strip(e)))?;
            scan("trend", provider, path)
        }
        "retention" | "cohort" => {
            let map = object(
                spec,
                path,
                &[
                    "cohort-event",
                    "return-event",
                    "period",
                    "periods",
                    "entity",
                    "time-column",
                ],
            )?;
            let joined = cx.expr(
                required(map, "cohort-event", path)?,
                &path.key("cohort-event"),
            )?;
            let returned = cx.expr(
                required(map, "return-event", path)?,
                &path.key("return-event"),
            )?;
            let period = match string(map, "period", path)? {
                Some(p) => {
                    Period::parse(p).map_err(|e| DslError::new(&path.key("period"), strip(e)))?
                }
                None => Period::Week,
            };
            let periods = match whole(map, "periods", path, udfs::cohorts::MAX_PERIODS)? {
                Some(0) => return err(&path.key("periods"), "expected at least 1"),
                Some(n) => n,
                None => 8,
            };
            let entity = cx.column(
                string(map, "entity", path)?.unwrap_or("entity_id"),
                &path.key("entity"),
            )?;
            let time = time_column(cx, map, path)?;
            let plan = builder
                .project(vec![
                    entity.alias("entity"),
                    time.alias("time"),
                    joined.alias("is_cohort_event"),
                    returned.alias("is_return_event"),
                ])
                .and_then(|b| b.build())
                .map_err(|e| engine(path, e))?;
            let provider = udfs::cohorts::cohorts_provider(plan, period, periods)
                .map_err(|e| DslError::new(path, strip(e)))?;
            scan("cohorts", provider, path)
        }
        "funnel" => funnel(cx, spec, builder, path),
        other => err(path, format!("unknown form \"{other}\"")),
    }
}

/// `funnel`: users per step, conversion from the previous step and from
/// the first, and the median seconds from the previous step.
fn funnel(
    cx: &Cx<'_>,
    spec: &Value,
    builder: LogicalPlanBuilder,
    path: &Path,
) -> Result<LogicalPlanBuilder, DslError> {
    let map = object(
        spec,
        path,
        &[
            "steps",
            "window",
            "mode",
            "breakdown",
            "entity",
            "time-column",
        ],
    )?;
    let spath = path.key("steps");
    let steps = match required(map, "steps", path)? {
        Value::Array(items) if !items.is_empty() && items.len() <= 32 => items
            .iter()
            .enumerate()
            .map(|(i, v)| cx.expr(v, &spath.index(i)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return err(&spath, "expected a list of 1 to 32 conditions"),
    };
    let window = interval(required(map, "window", path)?, &path.key("window"))?;
    if window.months != 0 {
        return err(
            &path.key("window"),
            "the window cannot be in months; use days",
        );
    }
    let entity = cx.column(
        string(map, "entity", path)?.unwrap_or("entity_id"),
        &path.key("entity"),
    )?;
    let time = time_column(cx, map, path)?;
    let by = breakdown(cx, map.get("breakdown"), &path.key("breakdown"))?;
    if by.len() > 1 {
        return err(&path.key("breakdown"), "expected one column");
    }
    let n = steps.len();
    let mut args = vec![lit(ScalarValue::IntervalMonthDayNano(Some(window)))];
    if let Some(mode) = string(map, "mode", path)? {
        udfs::window_funnel::check_mode(mode)
            .map_err(|e| DslError::new(&path.key("mode"), strip(e)))?;
        args.push(lit(mode));
    }
    args.push(time);
    args.extend(steps);
    let f = cx.state.udaf("funnel_steps").map_err(|e| engine(path, e))?;
    let steps_expr =
        Expr::AggregateFunction(datafusion::logical_expr::expr::AggregateFunction::new_udf(
            f,
            args,
            false,
            None,
            vec![],
            None,
        ));
    let mut group = vec![entity];
    group.extend(by.iter().map(|b| b.0.clone()));
    let per_entity = builder
        .aggregate(group, vec![steps_expr.alias("f")])
        .map_err(|e| engine(path, e))?;

    let get = cx.state.udf("get_field").map_err(|e| engine(path, e))?;
    let field = |name: &str| get.call(vec![Expr::Column(Column::from_name("f")), lit(name)]);
    let mut aggs = Vec::new();
    let sum = cx.state.udaf("sum").map_err(|e| engine(path, e))?;
    let median = cx.state.udaf("median").map_err(|e| engine(path, e))?;
    let agg = |f: &std::sync::Arc<datafusion::logical_expr::AggregateUDF>, e: Expr| {
        Expr::AggregateFunction(datafusion::logical_expr::expr::AggregateFunction::new_udf(
            f.clone(),
            vec![e],
            false,
            None,
            vec![],
            None,
        ))
    };
    for k in 1..=n {
        let reached = cast(field("level").gt_eq(lit(k as u8)), DataType::Int64);
        aggs.push(agg(&sum, reached).alias(format!("users_{k}")));
    }
    for k in 2..=n {
        let micros = |s: usize| cast(field(&format!("step_{s}")), DataType::Int64);
        let seconds = cast(micros(k) - micros(k - 1), DataType::Float64) / lit(1e6);
        aggs.push(agg(&median, seconds).alias(format!("median_{k}")));
    }
    let by_cols: Vec<Expr> = by
        .iter()
        .map(|b| match &b.0 {
            Expr::Column(c) => Expr::Column(Column::from_name(c.name.clone())),
            other => other.clone(),
        })
        .collect();
    let wide = per_entity
        .aggregate(by_cols.clone(), aggs)
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
        return err(&spath, "expected at least one step");
    };
    let mut sorts: Vec<_> = by
        .iter()
        .map(|b| Expr::Column(Column::from_name(b.1.clone())).sort(true, false))
        .collect();
    sorts.push(Expr::Column(Column::from_name("step")).sort(true, false));
    out.sort(sorts).map_err(|e| engine(path, e))
}
