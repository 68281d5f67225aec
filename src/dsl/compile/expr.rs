//! [`ast::Expr`] → DataFusion `Expr`, built with the `Expr` builders
//! and the session's function registry: names are resolved against the
//! schema here. Values are always literals: nothing is ever spliced into
//! SQL text.

use crate::dsl::ast::{self, Aggregate, Arithmetic, Comparison, ExprKind, InstantKind, Literal};
use crate::dsl::keywords::{Aggregation, suggest};
use crate::dsl::parse::parse_instant;
use crate::dsl::{DslError, Path};
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::ExprSchemable;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::type_coercion::functions::{UDFCoercionExt, fields_with_udf};
use datafusion::logical_expr::{Expr, Operator, binary_expr, lit};
use std::sync::Arc;

/// What an expression is compiled against.
pub(crate) struct Cx<'a> {
    pub(crate) schema: &'a DFSchema,
    pub(crate) state: &'a SessionState,
    /// The document's "now", fixed once so that every time helper agrees.
    pub(crate) now: DateTime<Utc>,
}

fn err<T>(path: &Path, message: impl Into<String>) -> Result<T, DslError> {
    Err(DslError::new(path, message))
}

/// A timestamp literal (µs, UTC).
pub(crate) fn timestamp_lit(t: DateTime<Utc>) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(t.timestamp_micros()),
        Some(Arc::from("UTC")),
    ))
}

fn literal(l: &Literal) -> Expr {
    match l {
        Literal::Null => lit(ScalarValue::Null),
        Literal::Bool(b) => lit(*b),
        Literal::Int(i) => lit(*i),
        Literal::Float(f) => lit(*f),
        Literal::Text(s) => lit(s.clone()),
    }
}

impl Cx<'_> {
    fn column_names(&self) -> Vec<&str> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect()
    }

    /// The column called `name` (or the payload path it spells), or an
    /// error naming the closest column.
    pub(crate) fn column(&self, name: &str, path: &Path) -> Result<Expr, DslError> {
        if self.schema.has_column_with_unqualified_name(name) {
            return Ok(Expr::Column(Column::from_name(name)));
        }
        // "payload.amount" and nested "payload.device.os" / "device.os"
        let rest = name.strip_prefix("payload.").unwrap_or(name);
        let parts: Vec<&str> = rest.split('.').collect();
        if rest != name || parts.len() > 1 {
            return self.payload(&parts, path);
        }
        err(
            path,
            format!(
                "unknown column \"{name}\"{}",
                suggest(name, self.column_names())
            ),
        )
    }

    /// A payload path: the first part is a column, the others keys inside
    /// its JSON text.
    fn payload(&self, parts: &[&str], path: &Path) -> Result<Expr, DslError> {
        let Some((first, keys)) = parts.split_first() else {
            return err(path, "an empty payload path");
        };
        if !self.schema.has_column_with_unqualified_name(first) {
            return err(
                path,
                format!(
                    "unknown payload field \"{first}\"{}",
                    suggest(first, self.column_names())
                ),
            );
        }
        let column = Expr::Column(Column::from_name(*first));
        if keys.is_empty() {
            return Ok(column);
        }
        let mut args = vec![column];
        args.extend(keys.iter().map(|k| lit(k.to_string())));
        self.call_scalar("json_get_str", args, path)
    }

    fn call_scalar(&self, name: &str, args: Vec<Expr>, path: &Path) -> Result<Expr, DslError> {
        let Ok(f) = self.state.udf(name) else {
            return err(path, format!("unknown function \"{name}\""));
        };
        self.check_signature(name, f.as_ref(), &args, path)?;
        Ok(f.call(args))
    }

    /// Refuses, at `path`, a call whose arguments none of the function's
    /// signatures take; the planner would only find it after the whole
    /// document is built, as an internal error. Arguments whose type is
    /// not known in this schema (an output name) are left to the planner.
    fn check_signature<F: UDFCoercionExt>(
        &self,
        name: &str,
        f: &F,
        args: &[Expr],
        path: &Path,
    ) -> Result<(), DslError> {
        let fields: Option<Vec<arrow::datatypes::FieldRef>> = args
            .iter()
            .map(|a| a.get_type(self.schema).ok())
            .map(|t| t.map(|t| Arc::new(arrow::datatypes::Field::new("arg", t, true))))
            .collect();
        match fields {
            Some(fields) if fields_with_udf(&fields, f).is_err() => {
                let types: Vec<String> = fields.iter().map(|f| f.data_type().to_string()).collect();
                err(
                    path,
                    format!(
                        "function \"{name}\" does not accept arguments of types ({})",
                        types.join(", ")
                    ),
                )
            }
            _ => Ok(()),
        }
    }

    fn call_aggregate(
        &self,
        name: &str,
        args: Vec<Expr>,
        distinct: bool,
        order_by_time: bool,
        path: &Path,
    ) -> Result<Expr, DslError> {
        let Ok(f) = self.state.udaf(name) else {
            return err(path, format!("unknown aggregate function \"{name}\""));
        };
        self.check_signature(name, f.as_ref(), &args, path)?;
        let order_by = if order_by_time {
            vec![self.column("timestamp", path)?.sort(true, false)]
        } else {
            vec![]
        };
        Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
            f, args, distinct, None, order_by, None,
        )))
    }

    /// The expression `e`.
    pub(crate) fn expr(&self, e: &ast::Expr) -> Result<Expr, DslError> {
        let path = &e.path;
        let at = |i: usize| path.index(i);
        Ok(match &e.kind {
            ExprKind::Name(name) => self.column(name, path)?,
            ExprKind::Column(name) => self.column(name, &at(1))?,
            ExprKind::Text(s) => lit(s.clone()),
            ExprKind::NameOrText(s) if self.schema.has_column_with_unqualified_name(s) => {
                Expr::Column(Column::from_name(s))
            }
            ExprKind::NameOrText(s) => lit(s.clone()),
            ExprKind::Literal(l) => literal(l),
            ExprKind::Logic { all, terms } => {
                let mut out: Option<Expr> = None;
                for term in terms {
                    let e = self.expr(term)?;
                    out = Some(match out {
                        None => e,
                        Some(acc) if *all => acc.and(e),
                        Some(acc) => acc.or(e),
                    });
                }
                out.unwrap_or_else(|| lit(true))
            }
            ExprKind::Not(x) => !self.expr(x)?,
            ExprKind::Compare { op, left, right } => {
                let l = self.expr(left)?;
                let r = self.expr(right)?;
                self.check_value(&l, right)?;
                binary_expr(l, comparison(*op), r)
            }
            ExprKind::Arithmetic { op, left, right } => {
                binary_expr(self.expr(left)?, arithmetic(*op), self.expr(right)?)
            }
            ExprKind::Like {
                case_insensitive,
                expr,
                pattern,
            } => {
                let e = self.expr(expr)?;
                let pattern = self.expr(pattern)?;
                if *case_insensitive {
                    e.ilike(pattern)
                } else {
                    e.like(pattern)
                }
            }
            ExprKind::InList {
                negated,
                expr,
                list,
            } => {
                let e = self.expr(expr)?;
                let list = list
                    .iter()
                    .map(|v| {
                        self.check_value(&e, v)?;
                        self.expr(v)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                e.in_list(list, *negated)
            }
            ExprKind::Between { expr, low, high } => {
                self.expr(expr)?.between(self.expr(low)?, self.expr(high)?)
            }
            ExprKind::IsNull { negated, expr } => {
                let e = self.expr(expr)?;
                if *negated {
                    e.is_not_null()
                } else {
                    e.is_null()
                }
            }
            ExprKind::Contains { expr, needle } => {
                let e = self.expr(expr)?;
                let needle = self.expr(needle)?;
                self.call_scalar("contains", vec![e, needle], path)?
            }
            ExprKind::Alias { expr, name } => self.expr(expr)?.alias(name),
            ExprKind::Payload(parts) => {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                self.payload(&parts, path)?
            }
            ExprKind::Call { name, args } => self.call(name, args, &at(1))?,
            ExprKind::Time(t) => timestamp_lit(self.instant(t)?),
            ExprKind::TimeBound { until, at } => {
                let t = timestamp_lit(self.instant(at)?);
                let ts = self.column("timestamp", path)?;
                if *until { ts.lt(t) } else { ts.gt_eq(t) }
            }
            ExprKind::Aggregate(a) => self.aggregate(a, path)?,
        })
    }

    /// `["fn", name, args...]`, `name` at `path`.
    fn call(&self, name: &str, args: &[ast::Expr], path: &Path) -> Result<Expr, DslError> {
        let args = args
            .iter()
            .map(|a| self.expr(a))
            .collect::<Result<Vec<_>, _>>()?;
        if self.state.udf(name).is_ok() {
            return self.call_scalar(name, args, path);
        }
        if self.state.udaf(name).is_ok() {
            return self.call_aggregate(name, args, false, false, path);
        }
        let mut names: Vec<&str> = self
            .state
            .scalar_functions()
            .keys()
            .map(String::as_str)
            .collect();
        names.extend(self.state.aggregate_functions().keys().map(String::as_str));
        err(
            path,
            format!("unknown function \"{name}\"{}", suggest(name, names)),
        )
    }

    /// The instant `t`, in the document's time.
    pub(crate) fn instant(&self, t: &ast::Instant) -> Result<DateTime<Utc>, DslError> {
        match t.kind {
            InstantKind::At(at) => Ok(at),
            InstantKind::Now => Ok(self.now),
            InstantKind::Ago { amount, seconds } => {
                let span = amount * seconds as f64;
                self.now
                    .checked_sub_signed(chrono::Duration::microseconds((span * 1e6) as i64))
                    .ok_or_else(|| {
                        DslError::new(&t.path.index(1), format!("{amount} is too far in the past"))
                    })
            }
        }
    }

    /// A string compared with a number or a time must read as one: the
    /// engine would only find out while running, without the path.
    fn check_value(&self, left: &Expr, v: &ast::Expr) -> Result<(), DslError> {
        let ExprKind::Text(text) = &v.kind else {
            return Ok(());
        };
        let Ok(dt) = left.get_type(self.schema) else {
            return Ok(());
        };
        if dt.is_numeric() && text.trim().parse::<f64>().is_err() {
            return err(
                &v.path,
                format!("\"{text}\" is not a number, and the other side is {dt}"),
            );
        }
        if matches!(
            dt,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
        ) && parse_instant(text).is_none()
        {
            return err(
                &v.path,
                format!("\"{text}\" is not an RFC 3339 time (like 2026-01-31T12:00:00Z) or a date"),
            );
        }
        Ok(())
    }

    /// One of the named aggregations, written at `path`.
    fn aggregate(&self, a: &Aggregate, path: &Path) -> Result<Expr, DslError> {
        let mut args = vec![match &a.arg {
            Some(e) => self.expr(e)?,
            None => lit(1i64),
        }];
        args.extend(a.fraction.map(lit));
        self.call_aggregate(
            a.func.function(),
            args,
            a.func == Aggregation::CountDistinct,
            matches!(a.func, Aggregation::First | Aggregation::Last),
            path,
        )
    }
}

fn comparison(op: Comparison) -> Operator {
    match op {
        Comparison::Eq => Operator::Eq,
        Comparison::NotEq => Operator::NotEq,
        Comparison::Lt => Operator::Lt,
        Comparison::LtEq => Operator::LtEq,
        Comparison::Gt => Operator::Gt,
        Comparison::GtEq => Operator::GtEq,
    }
}

fn arithmetic(op: Arithmetic) -> Operator {
    match op {
        Arithmetic::Plus => Operator::Plus,
        Arithmetic::Minus => Operator::Minus,
        Arithmetic::Multiply => Operator::Multiply,
        Arithmetic::Divide => Operator::Divide,
        Arithmetic::Modulo => Operator::Modulo,
    }
}
