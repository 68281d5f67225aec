//! Reads pinned to a point in a table's history, and the record of what a
//! query read.
//!
//! A [`Pin`] limits every table a query reads (the `as_of` request
//! parameter) or one table (`as_of(events, position => 42)` in SQL, which
//! [`rewrite_as_of`] turns into a table name the tenant's schema resolves)
//! to the rows acknowledged up to a position, or stored up to a time.
//! Because positions and ingest times are data, a pin holds for the
//! buffer, for compacted files and across vacuum alike.
//!
//! [`ReadLog`] collects, per table a query resolved, the Delta version it
//! read and the highest position visible to it: what a client needs to
//! repeat the same read (`as_of=position:N`).

use crate::schema;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, FunctionArgOperator, Ident, ObjectName,
    ObjectNamePart, Statement, TableFactor, Value, VisitMut, VisitorMut,
};
use std::ops::ControlFlow;

/// Where a read stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Rows whose position is at most this.
    Position(u64),
    /// Rows ingested at or before this time (microseconds since the
    /// epoch, UTC).
    Timestamp(i64),
    /// The table's stored rows at this Delta version (one table only;
    /// buffered rows are in no version).
    TableVersion(u64),
}

impl Pin {
    /// Parses a request's `as_of`: `position:N`, or an RFC 3339 time
    /// (optionally written `timestamp:...`).
    pub fn parse(text: &str) -> Result<Pin, String> {
        if let Some(p) = text.strip_prefix("position:") {
            return p
                .trim()
                .parse::<u64>()
                .map(Pin::Position)
                .map_err(|_| format!("as_of: {p:?} is not a position (a whole number)"));
        }
        let t = text.strip_prefix("timestamp:").unwrap_or(text).trim();
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| Pin::Timestamp(t.timestamp_micros()))
            .map_err(|e| {
                format!(
                    "as_of: {t:?} is neither position:N nor an RFC 3339 time ({e}); e.g. position:42 or 2026-11-01T00:00:00Z"
                )
            })
    }

    /// The filter that keeps a table's rows within the pin (`None` for
    /// a table version, which is read from its own files instead).
    pub fn filter(self) -> Option<Expr> {
        match self {
            Pin::Position(p) => {
                Some(col(schema::POSITION).lt_eq(lit(p.min(i64::MAX as u64) as i64)))
            }
            Pin::Timestamp(t) => Some(col(schema::INGESTED_AT).lt_eq(lit(
                ScalarValue::TimestampMicrosecond(Some(t), Some("UTC".into())),
            ))),
            Pin::TableVersion(_) => None,
        }
    }

    /// The name under which the tenant schema resolves `table` read as
    /// of this pin (what SQL's `as_of(...)` is rewritten to).
    pub fn table_name(self, table: &str) -> String {
        match self {
            Pin::Position(p) => format!("{table}@p{p}"),
            Pin::Timestamp(t) => format!("{table}@t{t}"),
            Pin::TableVersion(v) => format!("{table}@v{v}"),
        }
    }

    /// Splits `events@p42` into the table name and its pin.
    pub fn split_name(name: &str) -> Option<(&str, Pin)> {
        let (table, pin) = name.split_once('@')?;
        let pin = match (pin.get(..1)?, pin.get(1..)?) {
            ("p", n) => Pin::Position(n.parse().ok()?),
            ("t", n) => Pin::Timestamp(n.parse().ok()?),
            ("v", n) => Pin::TableVersion(n.parse().ok()?),
            _ => return None,
        };
        Some((table, pin))
    }
}

/// What a query read of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRead {
    pub table: String,
    /// The Delta version of its stored part (`None` before the first
    /// flush).
    pub delta_version: Option<u64>,
    /// The highest position visible to the query (`None`: no row has
    /// one).
    pub position: Option<u64>,
}

/// The tables a query resolved, in order, each once.
#[derive(Debug, Default)]
pub struct ReadLog(parking_lot::Mutex<Vec<TableRead>>);

impl ReadLog {
    pub(crate) fn add(&self, read: TableRead) {
        let mut reads = self.0.lock();
        if !reads.contains(&read) {
            reads.push(read);
        }
    }

    /// What was read, as `table=v<version>@p<position>` items joined by
    /// `, ` (the `x-allsource-snapshot` header).
    pub fn header(&self) -> String {
        self.0
            .lock()
            .iter()
            .map(|r| {
                let version = r.delta_version.map_or("-".to_string(), |v| v.to_string());
                let position = r.position.map_or("-".to_string(), |p| p.to_string());
                format!("{}=v{version}@p{position}", r.table)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn reads(&self) -> Vec<TableRead> {
        self.0.lock().clone()
    }
}

/// Rewrites each `as_of(table, position => N)` or `as_of(table,
/// timestamp => 'RFC 3339')` in the statement's FROM clauses into the
/// pinned table name the tenant schema resolves.
pub fn rewrite_as_of(statement: &mut Statement) -> Result<(), String> {
    struct AsOf(Option<String>);
    impl VisitorMut for AsOf {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table { name, args, .. } = factor else {
                return ControlFlow::Continue(());
            };
            let is_as_of = name.0.len() == 1
                && name.0[0]
                    .as_ident()
                    .is_some_and(|i| i.value.eq_ignore_ascii_case("as_of"));
            let Some(call) = args.as_ref().filter(|_| is_as_of) else {
                return ControlFlow::Continue(());
            };
            match pinned_name(&call.args) {
                Ok(pinned) => {
                    *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(pinned))]);
                    *args = None;
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    self.0 = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut visitor = AsOf(None);
    let _ = statement.visit(&mut visitor);
    visitor.0.map_or(Ok(()), Err)
}

const AS_OF_USAGE: &str = "as_of takes a table and one of position => N or timestamp => 'RFC 3339 time', e.g. as_of(events, position => 42)";

fn pinned_name(args: &[FunctionArg]) -> Result<String, String> {
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(table)),
        FunctionArg::Named {
            name,
            arg: FunctionArgExpr::Expr(value),
            operator: FunctionArgOperator::RightArrow,
        },
    ] = args
    else {
        return Err(AS_OF_USAGE.to_string());
    };
    let table = match table {
        SqlExpr::Identifier(i) => i.value.to_lowercase(),
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.clone(),
            _ => return Err(AS_OF_USAGE.to_string()),
        },
        _ => return Err(AS_OF_USAGE.to_string()),
    };
    let value = match value {
        SqlExpr::Value(v) => match &v.value {
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) => s.clone(),
            _ => return Err(AS_OF_USAGE.to_string()),
        },
        _ => return Err(AS_OF_USAGE.to_string()),
    };
    let pin = match name.value.to_lowercase().as_str() {
        "position" => Pin::parse(&format!("position:{value}"))?,
        "timestamp" => Pin::parse(&format!("timestamp:{value}"))?,
        "table_version" => Pin::TableVersion(value.parse().map_err(|_| {
            format!("as_of: table_version {value:?} is not a version (a whole number)")
        })?),
        other => return Err(format!("as_of: unknown pin {other:?}; {AS_OF_USAGE}")),
    };
    Ok(pin.table_name(&table))
}

/// Whether an expression mentions a column (used by tests).
#[cfg(test)]
fn mentions(e: &Expr, column: &str) -> bool {
    use datafusion::common::tree_node::TreeNode;
    e.exists(|x| Ok(matches!(x, Expr::Column(c) if c.name == column)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_name_their_column() {
        assert_eq!(Pin::parse("position:42"), Ok(Pin::Position(42)));
        assert_eq!(
            Pin::parse("2026-11-01T00:00:00Z"),
            Ok(Pin::Timestamp(1_793_491_200_000_000))
        );
        assert!(
            Pin::parse("position:x")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(Pin::parse("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(mentions(
            &Pin::Position(1).filter().unwrap(),
            schema::POSITION
        ));
        assert!(mentions(
            &Pin::Timestamp(1).filter().unwrap(),
            schema::INGESTED_AT
        ));
        assert_eq!(Pin::TableVersion(3).filter(), None);
        assert_eq!(
            Pin::split_name("events@v3"),
            Some(("events", Pin::TableVersion(3)))
        );
        assert_eq!(
            Pin::split_name("events@p42"),
            Some(("events", Pin::Position(42)))
        );
        assert_eq!(Pin::split_name("events"), None);
        assert_eq!(Pin::split_name("events@x1"), None);
    }
}
