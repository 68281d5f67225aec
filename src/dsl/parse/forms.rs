//! The analytics forms' objects → [`Form`]: keys, intervals, methods and
//! the other settings checked here; the expressions and column names in
//! them are resolved by the compiler.

use super::err;
use super::expr::{default_name, expr, instant};
use crate::dsl::ast::{
    Anomalies, Breakdown, ExprKind, Form, FormKind, Funnel, Metric, Node, Retention, Series,
    TimeSeries, Trend,
};
use crate::dsl::keywords::{FormKey, FormName, TrendMethodName, alternatives, suggest};
use crate::dsl::{DslError, Path, strip};
use arrow::compute::kernels::cast_utils::parse_interval_month_day_nano;
use arrow::datatypes::IntervalMonthDayNano;
use serde_json::{Map, Value};
use udfs::anomaly::Method;
use udfs::cohorts::Period;
use udfs::gapfill::Fill;
use udfs::trend::TrendMethod;

/// Most steps a funnel may have.
pub(super) const MAX_STEPS: usize = 32;

/// The form `name`, written at `path` as `spec`.
pub(super) fn form(name: FormName, spec: &Value, path: &Path) -> Result<Form, DslError> {
    let f = Fields::new(spec, path, name)?;
    let kind = match name {
        FormName::TimeSeries => FormKind::TimeSeries(time_series(&f)?),
        FormName::Anomalies => FormKind::Anomalies(anomalies(&f)?),
        FormName::Trend => FormKind::Trend(trend(&f)?),
        FormName::Retention | FormName::Cohort => FormKind::Retention(retention(&f)?),
        FormName::Funnel => FormKind::Funnel(funnel(&f)?),
    };
    Ok(Form {
        path: path.clone(),
        kind,
    })
}

/// A form's object, its keys checked against the form's.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl<'a> Fields<'a> {
    fn new(spec: &'a Value, path: &'a Path, form: FormName) -> Result<Self, DslError> {
        let Value::Object(map) = spec else {
            return err(path, "expected an object");
        };
        let words = form.keys().iter().map(|k| k.word());
        for k in map.keys() {
            if !words.clone().any(|w| w == k) {
                return err(
                    &path.key(k),
                    format!(
                        "unknown key \"{k}\"{}; this form takes {}",
                        suggest(k, words.clone()),
                        words.collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        Ok(Fields { map, path })
    }

    fn get(&self, key: FormKey) -> Option<&'a Value> {
        self.map.get(key.word())
    }

    fn at(&self, key: FormKey) -> Path {
        self.path.key(key.word())
    }

    fn required(&self, key: FormKey) -> Result<&'a Value, DslError> {
        self.get(key)
            .ok_or_else(|| DslError::new(&self.at(key), "missing"))
    }

    fn string(&self, key: FormKey) -> Result<Option<&'a str>, DslError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => err(&self.at(key), "expected a string"),
        }
    }

    fn number(&self, key: FormKey) -> Result<Option<f64>, DslError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| DslError::new(&self.at(key), "expected a number")),
        }
    }

    fn whole(&self, key: FormKey, max: u64) -> Result<Option<u64>, DslError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => err(
                    &self.at(key),
                    format!("expected a whole number from 0 to {max}"),
                ),
            },
        }
    }

    /// A column name under `key`, `default` when absent.
    fn column(&self, key: FormKey, default: &str) -> Result<Node<String>, DslError> {
        let name = self.string(key)?.unwrap_or(default);
        Ok(Node::new(&self.at(key), name.to_string()))
    }
}

/// An interval: a string such as "1 hour" or "15 minutes", or a number of
/// seconds; positive, and either whole months or days and nanoseconds.
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

/// An aggregation of a form and its column's name: its alias, or its
/// default name. Whether it aggregates is the compiler's to check.
fn metric(v: &Value, path: &Path) -> Result<Metric, DslError> {
    let expr = expr(v, path)?;
    let name = match &expr.kind {
        ExprKind::Alias { name, .. } => name.clone(),
        _ => default_name(v),
    };
    Ok(Metric { expr, name })
}

/// The breakdown columns: one name or a list of names.
fn breakdown(v: Option<&Value>, path: &Path) -> Result<Vec<Breakdown>, DslError> {
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
            Value::String(name) => Ok(Breakdown {
                column: Node::new(&p, name.clone()),
                name: name.replace('.', "_"),
            }),
            _ => err(&p, "expected a column name"),
        })
        .collect()
}

/// The time buckets of `time-series`, `anomalies` and `trend`, whose
/// value columns will be called `names` (after `time`).
fn series(f: &Fields<'_>, default_fill: Fill, names: &[&str]) -> Result<Series, DslError> {
    let interval = interval(f.required(FormKey::Interval)?, &f.at(FormKey::Interval))?;
    let time_column = f.column(FormKey::TimeColumn, "timestamp")?;
    let start = f
        .get(FormKey::Start)
        .map(|v| instant(v, &f.at(FormKey::Start)))
        .transpose()?;
    let end = f
        .get(FormKey::End)
        .map(|v| instant(v, &f.at(FormKey::End)))
        .transpose()?;
    let fill = match f.string(FormKey::Fill)? {
        Some(text) => {
            Fill::parse(text).map_err(|e| DslError::new(&f.at(FormKey::Fill), strip(e)))?
        }
        None => default_fill,
    };
    let both = "missing: give both start and end, or neither";
    let range = match (start, end) {
        (Some(s), Some(e)) => Some((s, e)),
        (None, None) => None,
        (Some(_), None) => return err(&f.at(FormKey::End), both),
        (None, Some(_)) => return err(&f.at(FormKey::Start), both),
    };
    let mut seen = vec!["time"];
    for &n in names {
        if seen.contains(&n) {
            return err(
                f.path,
                format!(
                    "two columns would be called \"{n}\"; name one with [\"as\", ..., \"name\"]"
                ),
            );
        }
        seen.push(n);
    }
    if interval.months > 0 && !matches!(interval.months, 1 | 3 | 12) {
        return err(
            &f.at(FormKey::Interval),
            "month intervals must be 1, 3 or 12 months",
        );
    }
    Ok(Series {
        interval,
        time_column,
        range,
        fill,
    })
}

fn time_series(f: &Fields<'_>) -> Result<TimeSeries, DslError> {
    let apath = f.at(FormKey::Aggregations);
    let aggregations = match f.required(FormKey::Aggregations)? {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| metric(v, &apath.index(i)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return err(&apath, "expected a non-empty list of aggregations"),
    };
    let by = breakdown(f.get(FormKey::By), &f.at(FormKey::By))?;
    let names: Vec<&str> = by
        .iter()
        .map(|b| b.name.as_str())
        .chain(aggregations.iter().map(|a| a.name.as_str()))
        .collect();
    let series = series(f, Fill::Null, &names)?;
    Ok(TimeSeries {
        aggregations,
        by,
        series,
    })
}

fn anomalies(f: &Fields<'_>) -> Result<Anomalies, DslError> {
    let metric = metric(f.required(FormKey::Metric)?, &f.at(FormKey::Metric))?;
    let (key, name) = match (f.string(FormKey::Algorithm)?, f.string(FormKey::Method)?) {
        (Some(a), None) => (FormKey::Algorithm, a),
        (None, Some(m)) => (FormKey::Method, m),
        (None, None) => (FormKey::Algorithm, "mad"),
        (Some(_), Some(_)) => {
            return err(&f.at(FormKey::Method), "give algorithm or method, not both");
        }
    };
    let method =
        Method::parse("anomalies", name).map_err(|e| DslError::new(&f.at(key), strip(e)))?;
    let sensitivity = match f.number(FormKey::Sensitivity)? {
        Some(k) => udfs::anomaly::check_k("anomalies", k)
            .map_err(|e| DslError::new(&f.at(FormKey::Sensitivity), strip(e)))?,
        None => method.default_k(),
    };
    let series = series(f, Fill::Zero, &["value"])?;
    Ok(Anomalies {
        metric,
        method,
        sensitivity,
        series,
    })
}

fn trend(f: &Fields<'_>) -> Result<Trend, DslError> {
    let metric = metric(f.required(FormKey::Metric)?, &f.at(FormKey::Metric))?;
    let periods = f
        .whole(FormKey::Periods, udfs::trend::MAX_PERIODS)?
        .unwrap_or(0);
    let alpha = f.number(FormKey::Alpha)?;
    let beta = f.number(FormKey::Beta)?;
    let alpha_path = f.at(FormKey::Alpha);
    let name = f.string(FormKey::Method)?.unwrap_or("linear");
    let method = match TrendMethodName::parse(name) {
        Some(TrendMethodName::Linear) if alpha.is_some() || beta.is_some() => {
            return err(&alpha_path, "alpha and beta apply only to the holt method");
        }
        Some(TrendMethodName::Linear) => TrendMethod::Linear,
        Some(TrendMethodName::Holt) => match (alpha, beta) {
            (None, None) => TrendMethod::Holt(None),
            (Some(a), Some(b)) if a > 0.0 && a <= 1.0 && (0.0..=1.0).contains(&b) => {
                TrendMethod::Holt(Some((a, b)))
            }
            (Some(_), Some(_)) => {
                return err(&alpha_path, "alpha must be in (0, 1] and beta in [0, 1]");
            }
            _ => {
                return err(
                    &alpha_path,
                    "give both alpha and beta, or neither to fit them",
                );
            }
        },
        None => {
            return err(
                &f.at(FormKey::Method),
                format!(
                    "unknown method \"{name}\"; use {}",
                    alternatives(TrendMethodName::words())
                ),
            );
        }
    };
    let series = series(f, Fill::Zero, &["value"])?;
    Ok(Trend {
        metric,
        periods,
        method,
        series,
    })
}

fn retention(f: &Fields<'_>) -> Result<Retention, DslError> {
    let cohort_event = expr(
        f.required(FormKey::CohortEvent)?,
        &f.at(FormKey::CohortEvent),
    )?;
    let return_event = expr(
        f.required(FormKey::ReturnEvent)?,
        &f.at(FormKey::ReturnEvent),
    )?;
    let period = match f.string(FormKey::Period)? {
        Some(p) => Period::parse(p).map_err(|e| DslError::new(&f.at(FormKey::Period), strip(e)))?,
        None => Period::Week,
    };
    let periods = match f.whole(FormKey::Periods, udfs::cohorts::MAX_PERIODS)? {
        Some(0) => return err(&f.at(FormKey::Periods), "expected at least 1"),
        Some(n) => n,
        None => 8,
    };
    Ok(Retention {
        cohort_event,
        return_event,
        period,
        periods,
        entity: f.column(FormKey::Entity, "entity_id")?,
        time_column: f.column(FormKey::TimeColumn, "timestamp")?,
    })
}

fn funnel(f: &Fields<'_>) -> Result<Funnel, DslError> {
    let spath = f.at(FormKey::Steps);
    let steps = match f.required(FormKey::Steps)? {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_STEPS => items
            .iter()
            .enumerate()
            .map(|(i, v)| expr(v, &spath.index(i)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return err(
                &spath,
                format!("expected a list of 1 to {MAX_STEPS} conditions"),
            );
        }
    };
    let window = interval(f.required(FormKey::Window)?, &f.at(FormKey::Window))?;
    if window.months != 0 {
        return err(
            &f.at(FormKey::Window),
            "the window cannot be in months; use days",
        );
    }
    let entity = f.column(FormKey::Entity, "entity_id")?;
    let time_column = f.column(FormKey::TimeColumn, "timestamp")?;
    let mut by = breakdown(f.get(FormKey::Breakdown), &f.at(FormKey::Breakdown))?;
    if by.len() > 1 {
        return err(&f.at(FormKey::Breakdown), "expected one column");
    }
    let mode = f.string(FormKey::Mode)?;
    if let Some(mode) = mode {
        udfs::window_funnel::check_mode(mode)
            .map_err(|e| DslError::new(&f.at(FormKey::Mode), strip(e)))?;
    }
    Ok(Funnel {
        steps,
        window,
        entity,
        time_column,
        breakdown: by.pop(),
        mode: mode.map(str::to_string),
    })
}
