//! Expressions, values and times: JSON → [`Expr`] and [`Instant`]. Only
//! the shape is checked here (operators, argument counts, literals,
//! nesting); names are resolved against the schema by the compiler.

use super::err;
use crate::dsl::ast::{
    Aggregate, Arithmetic, Comparison, Expr, ExprKind, Instant, InstantKind, Literal,
};
use crate::dsl::keywords::{Aggregation, Arity, Op, operator_words, suggest};
use crate::dsl::{DslError, Path};
use crate::query::bounds::MAX_DEPTH;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// How far back a `*-ago` span may reach, in seconds. A fixed bound, so
/// whether a span is accepted does not depend on today's date: 100,000
/// years back is a valid timestamp from any "now" before the year 190,000.
const MAX_SPAN_SECONDS: f64 = 100_000.0 * 365.25 * 86_400.0;

/// What a JSON value is, for messages.
pub(crate) fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An expression: a string names a column; numbers, booleans and null are
/// literals; an array is `[operator, ...]`.
pub(crate) fn expr(v: &Value, path: &Path) -> Result<Expr, DslError> {
    expr_at(v, path, 0)
}

/// An expression inside operators nested `depth` levels deep.
fn expr_at(v: &Value, path: &Path, depth: usize) -> Result<Expr, DslError> {
    let kind = match v {
        Value::String(name) => ExprKind::Name(name.clone()),
        Value::Array(items) => return op(items, path, depth),
        Value::Object(_) => {
            return err(
                path,
                "expected a column name, a value or an [operator, ...] array, got an object",
            );
        }
        other => ExprKind::Literal(literal(other, path)?),
    };
    Ok(Expr {
        path: path.clone(),
        kind,
    })
}

/// A value: like an expression, but a string is a string literal (a
/// column is `["col", name]`).
fn value_at(v: &Value, path: &Path, depth: usize) -> Result<Expr, DslError> {
    match v {
        Value::String(s) => Ok(Expr {
            path: path.clone(),
            kind: ExprKind::Text(s.clone()),
        }),
        _ => expr_at(v, path, depth),
    }
}

/// A function argument: a string is a column if the schema has one of
/// that name, else a string literal.
fn fn_arg_at(v: &Value, path: &Path, depth: usize) -> Result<Expr, DslError> {
    match v {
        Value::String(s) => Ok(Expr {
            path: path.clone(),
            kind: ExprKind::NameOrText(s.clone()),
        }),
        _ => expr_at(v, path, depth),
    }
}

/// A JSON scalar as a literal.
fn literal(v: &Value, path: &Path) -> Result<Literal, DslError> {
    Ok(match v {
        Value::Null => Literal::Null,
        Value::Bool(b) => Literal::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Literal::Int(i),
            (None, Some(f)) => Literal::Float(f),
            _ => return err(path, format!("the number {n} is out of range")),
        },
        Value::String(s) => Literal::Text(s.clone()),
        Value::Array(_) | Value::Object(_) => {
            return err(path, format!("expected a value, got {}", describe(v)));
        }
    })
}

/// The nesting depth inside operator `word` with `args` arguments: one
/// level more, or `args - 1` more for `and` and `or`, whose terms are
/// chained; refused past [`MAX_DEPTH`], before anything that deep is built.
fn nest(word: &str, args: usize, depth: usize, path: &Path) -> Result<usize, DslError> {
    let levels = match Op::parse(word) {
        Some(Op::And | Op::Or) => args.saturating_sub(1).max(1),
        _ => 1,
    };
    let depth = depth + levels;
    if depth > MAX_DEPTH {
        return err(
            path,
            format!(
                "the expression nests more than {MAX_DEPTH} levels deep (an \"and\" or \"or\" of n terms counts n - 1): use [\"in\", column, [...]] for a long list of alternatives"
            ),
        );
    }
    Ok(depth)
}

fn check_arity(word: &str, arity: Arity, n: usize, path: &Path) -> Result<(), DslError> {
    if n < arity.min || n > arity.max {
        return err(
            path,
            format!(
                "\"{word}\" takes {}, got {n} argument{}",
                arity.usage,
                if n == 1 { "" } else { "s" }
            ),
        );
    }
    Ok(())
}

/// `[operator, args...]`.
fn op(items: &[Value], path: &Path, depth: usize) -> Result<Expr, DslError> {
    let Some(first) = items.first() else {
        return err(path, "an empty array; expected [operator, ...]");
    };
    let Some(word) = first.as_str() else {
        return err(
            &path.index(0),
            format!("expected an operator name, got {}", describe(first)),
        );
    };
    let args = &items[1..];
    let depth = nest(word, args.len(), depth, path)?;
    let kind = if let Some(op) = Op::parse(word) {
        check_arity(word, op.arity(), args.len(), path)?;
        operator(op, args, path, depth)?
    } else if let Some(func) = Aggregation::parse(word) {
        check_arity(word, func.arity(), args.len(), path)?;
        ExprKind::Aggregate(aggregate(func, args, path, depth)?)
    } else {
        return err(
            &path.index(0),
            format!(
                "unknown operator \"{word}\"{}",
                suggest(word, operator_words())
            ),
        );
    };
    Ok(Expr {
        path: path.clone(),
        kind,
    })
}

/// An operator, its arguments counted.
fn operator(op: Op, args: &[Value], path: &Path, depth: usize) -> Result<ExprKind, DslError> {
    // argument `i` is the array's item `i + 1`
    let at = |i: usize| path.index(i + 1);
    let expr = |i: usize| expr_at(&args[i], &at(i), depth).map(Box::new);
    let value = |i: usize| value_at(&args[i], &at(i), depth).map(Box::new);
    let compare = |op: Comparison| -> Result<ExprKind, DslError> {
        Ok(ExprKind::Compare {
            op,
            left: expr(0)?,
            right: value(1)?,
        })
    };
    let arithmetic = |op: Arithmetic| -> Result<ExprKind, DslError> {
        Ok(ExprKind::Arithmetic {
            op,
            left: expr(0)?,
            right: expr(1)?,
        })
    };
    Ok(match op {
        Op::And | Op::Or => ExprKind::Logic {
            all: op == Op::And,
            terms: (0..args.len())
                .map(|i| expr_at(&args[i], &at(i), depth))
                .collect::<Result<_, _>>()?,
        },
        Op::Not => ExprKind::Not(expr(0)?),
        Op::Eq => compare(Comparison::Eq)?,
        Op::NotEq => compare(Comparison::NotEq)?,
        Op::Lt => compare(Comparison::Lt)?,
        Op::LtEq => compare(Comparison::LtEq)?,
        Op::Gt => compare(Comparison::Gt)?,
        Op::GtEq => compare(Comparison::GtEq)?,
        Op::Like | Op::ILike => ExprKind::Like {
            case_insensitive: op == Op::ILike,
            expr: expr(0)?,
            pattern: value(1)?,
        },
        Op::In | Op::NotIn => {
            let e = expr(0)?;
            let Value::Array(list) = &args[1] else {
                return err(&at(1), "expected a list of values");
            };
            ExprKind::InList {
                negated: op == Op::NotIn,
                expr: e,
                list: list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| value_at(v, &at(1).index(i), depth))
                    .collect::<Result<_, _>>()?,
            }
        }
        Op::Between => ExprKind::Between {
            expr: expr(0)?,
            low: value(1)?,
            high: value(2)?,
        },
        Op::IsNull | Op::NotNull => ExprKind::IsNull {
            negated: op == Op::NotNull,
            expr: expr(0)?,
        },
        Op::Contains => ExprKind::Contains {
            expr: expr(0)?,
            needle: value(1)?,
        },
        Op::Plus => arithmetic(Arithmetic::Plus)?,
        Op::Minus => arithmetic(Arithmetic::Minus)?,
        Op::Multiply => arithmetic(Arithmetic::Multiply)?,
        Op::Divide => arithmetic(Arithmetic::Divide)?,
        Op::Modulo => arithmetic(Arithmetic::Modulo)?,
        Op::As => {
            let Some(name) = args[1].as_str().filter(|n| !n.is_empty()) else {
                return err(&at(1), "expected the new name as a non-empty string");
            };
            ExprKind::Alias {
                expr: expr(0)?,
                name: name.to_string(),
            }
        }
        Op::Col => match &args[0] {
            Value::String(name) => ExprKind::Column(name.clone()),
            other => {
                return err(
                    &at(0),
                    format!("expected a column name, got {}", describe(other)),
                );
            }
        },
        Op::Lit => ExprKind::Literal(literal(&args[0], &at(0))?),
        Op::Payload => ExprKind::Payload(
            args.iter()
                .enumerate()
                .map(|(i, v)| match v.as_str() {
                    Some(s) => Ok(s.to_string()),
                    None => err(&at(i), "expected a field name"),
                })
                .collect::<Result<_, _>>()?,
        ),
        Op::Fn => {
            let Some(name) = args[0].as_str() else {
                return err(&at(0), "expected a function name");
            };
            ExprKind::Call {
                name: name.to_string(),
                args: (1..args.len())
                    .map(|i| fn_arg_at(&args[i], &at(i), depth))
                    .collect::<Result<_, _>>()?,
            }
        }
        Op::Now => ExprKind::Time(Instant {
            path: path.clone(),
            kind: InstantKind::Now,
        }),
        Op::DaysAgo | Op::HoursAgo | Op::MinutesAgo => ExprKind::Time(ago(op, args, path)?),
        Op::Since | Op::Until => ExprKind::TimeBound {
            until: op == Op::Until,
            at: instant(&args[0], &at(0))?,
        },
    })
}

/// One of the named aggregations, its arguments counted.
fn aggregate(
    func: Aggregation,
    args: &[Value],
    path: &Path,
    depth: usize,
) -> Result<Aggregate, DslError> {
    let arg = match args.first() {
        Some(v) => Some(Box::new(expr_at(v, &path.index(1), depth)?)),
        None => None,
    };
    let fraction = if func.takes_fraction() {
        match args[1].as_f64() {
            Some(p) if (0.0..=1.0).contains(&p) => Some(p),
            _ => return err(&path.index(2), "expected a fraction from 0 to 1"),
        }
    } else {
        None
    };
    Ok(Aggregate {
        func,
        arg,
        fraction,
    })
}

/// A `*-ago` helper written at `path`, with `args` after its name.
fn ago(op: Op, args: &[Value], path: &Path) -> Result<Instant, DslError> {
    let seconds = op.seconds_ago().unwrap_or(1);
    let amount = match args.first().and_then(Value::as_f64) {
        Some(n) if n >= 0.0 && n.is_finite() => n,
        _ => return err(&path.index(1), "expected a non-negative number"),
    };
    if amount * seconds as f64 > MAX_SPAN_SECONDS {
        return err(
            &path.index(1),
            format!("{amount} is too far in the past (at most 100000 years)"),
        );
    }
    Ok(Instant {
        path: path.clone(),
        kind: InstantKind::Ago { amount, seconds },
    })
}

/// An instant given as an RFC 3339 string, a date, or a time helper (whose
/// arguments past the first are not looked at).
pub(crate) fn instant(v: &Value, path: &Path) -> Result<Instant, DslError> {
    let kind = match v {
        Value::String(s) => match parse_instant(s) {
            Some(t) => InstantKind::At(t),
            None => {
                return err(
                    path,
                    format!(
                        "\"{s}\" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date"
                    ),
                );
            }
        },
        Value::Array(items) => {
            let word = items.first().and_then(Value::as_str).unwrap_or_default();
            match Op::parse(word) {
                Some(Op::Now) => InstantKind::Now,
                Some(op) if op.seconds_ago().is_some() => return ago(op, &items[1..], path),
                _ => {
                    return err(
                        path,
                        "expected a time: an RFC 3339 string, [\"now\"] or [\"days-ago\", n]",
                    );
                }
            }
        }
        other => {
            return err(
                path,
                format!(
                    "expected a time: an RFC 3339 string or a time helper, got {}",
                    describe(other)
                ),
            );
        }
    };
    Ok(Instant {
        path: path.clone(),
        kind,
    })
}

/// An RFC 3339 time or a plain date (midnight UTC).
pub(crate) fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The column name of an unnamed aggregation, from how it is written:
/// `["sum", "amount"]` → `sum_amount`, `["count"]` → `count`,
/// `["percentile", "x", 0.9]` → `percentile_x_0_9`.
pub(crate) fn default_name(v: &Value) -> String {
    let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut parts: Vec<String> = Vec::new();
    for item in items {
        match item {
            Value::String(s) => parts.push(s.replace(['-', '.'], "_")),
            Value::Number(n) => parts.push(n.to_string().replace('.', "_")),
            _ => {}
        }
    }
    parts.join("_")
}

/// Whether `v` is `[aggregation, ...]` with no alias around it.
pub(crate) fn is_bare_aggregation(v: &Value) -> bool {
    v.as_array()
        .and_then(|items| items.first())
        .and_then(Value::as_str)
        .is_some_and(|word| Aggregation::parse(word).is_some())
}
