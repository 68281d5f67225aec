//! `data_quality('<table>', <window> [, <late after>])`: data-quality
//! measures of a table's events ingested within the window (an interval
//! back from now, or a string such as '1 day'), as rows of
//! `(event_type, field, measure, value)`:
//!
//! | measure | per | value |
//! |---|---|---|
//! | `events` | event type | events in the window |
//! | `completeness` | event type, field | share of the type's events with a value for the field (fields seen at least once, and every field the type's schema declares) |
//! | `violations` | event type, rule | events stored with the `warn` rule broken (`_violations`) |
//! | `duplicate_event_ids` | event type | events whose `event_id` an earlier one in the window has |
//! | `duplicate_payloads` | event type | events repeating an earlier one's entity and payload exactly |
//! | `lag_p50_seconds`, `lag_p95_seconds`, `lag_max_seconds` | event type | ingest time minus event time |
//! | `late_arrivals` | event type | events ingested more than `late after` (default 1 hour) after their time |
//! | `version_gaps` | table (`event_type` null) | versions missing inside each entity's range of versions in the window |
//! | `out_of_order` | table | events whose time is before the previous event of their entity |
//!
//! It is SQL over the table, planned in the caller's session (so the
//! tenant's own table, read as the caller reads it), built from the
//! table's columns when the call is planned.

use super::{quote_ident as ident, quote_text as text};
use crate::schema::FIXED_COLUMNS;
use crate::schema::governed::{RESERVED_COLUMNS, VIOLATIONS};
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use std::sync::Arc;

const NAME: &str = "data_quality";
const USAGE: &str =
    "('<table>', <window: an interval or a string such as '1 day'> [, <late after: an interval>])";

/// The table function.
#[derive(Debug, Default)]
pub struct DataQuality;

/// Where the function learns which fields a governed table's event types
/// declare: their completeness is reported even when no event has them.
#[derive(Debug)]
pub struct Declared {
    pub db: std::sync::Arc<crate::db::Database>,
    pub tenant: crate::ids::TenantId,
}

impl Declared {
    /// (event type, field) of every field the live versions of `table`'s
    /// event types declare.
    fn of(&self, table: &str) -> Vec<(String, String)> {
        let Ok(name) = table.parse::<crate::ids::TableName>() else {
            return Vec::new();
        };
        let Some(gov) = self.db.schemas().get(&self.tenant, &name) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = gov
            .types
            .iter()
            .flat_map(|(t, versions)| {
                versions
                    .iter()
                    .filter(|v| v.is_live())
                    .flat_map(move |v| v.def.fields.keys().map(move |f| (t.clone(), f.clone())))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The SQL interval of a constant argument: an interval literal or a
/// string DataFusion reads as one.
fn interval(arg: Option<&Expr>, what: &str, position: usize) -> Result<String> {
    let literal = match arg {
        Some(Expr::Literal(v, _)) => v,
        Some(_) => return plan_err!("{NAME}: {what} (argument {position}) must be a constant"),
        None => {
            return plan_err!(
                "{NAME}: {what} (argument {position}) is missing; usage: {NAME}{USAGE}"
            );
        }
    };
    let (months, days, nanos) = match literal {
        ScalarValue::IntervalMonthDayNano(Some(v)) => (v.months, v.days, v.nanoseconds),
        ScalarValue::IntervalDayTime(Some(v)) => (0, v.days, i64::from(v.milliseconds) * 1_000_000),
        ScalarValue::IntervalYearMonth(Some(m)) => (*m, 0, 0),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => {
            if s.is_empty()
                || s.len() > 64
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '.')
            {
                return plan_err!(
                    "{NAME}: {what} {s:?} is not an interval such as '1 day' or '30 minutes'"
                );
            }
            return Ok(format!("INTERVAL {}", text(s)));
        }
        other => {
            return plan_err!(
                "{NAME}: {what} must be an interval such as INTERVAL '1 day'; got {other}"
            );
        }
    };
    if months < 0 || days < 0 || nanos < 0 || (months, days, nanos) == (0, 0, 0) {
        return plan_err!("{NAME}: {what} must be a positive interval");
    }
    Ok(format!(
        "INTERVAL '{months} months {days} days {nanos} nanoseconds'"
    ))
}

impl TableFunctionImpl for DataQuality {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=3).contains(&exprs.len()) {
            return plan_err!("{NAME} expects {USAGE}, got {} arguments", exprs.len());
        }
        let table = match exprs.first() {
            Some(Expr::Literal(
                ScalarValue::Utf8(Some(t))
                | ScalarValue::Utf8View(Some(t))
                | ScalarValue::LargeUtf8(Some(t)),
                _,
            )) => t.clone(),
            _ => return plan_err!("{NAME}: the table (argument 1) must be a string constant"),
        };
        let window = interval(exprs.get(1), "the window", 2)?;
        let late = match exprs.get(2) {
            Some(_) => interval(exprs.get(2), "the lateness", 3)?,
            None => "INTERVAL '1 hour'".to_string(),
        };
        let session = args.session();
        let probe = udfs::udtf::plan_inner(
            NAME,
            session,
            &format!("SELECT * FROM {} LIMIT 0", ident(&table)),
        )?;
        let columns: Vec<String> = probe
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let declared = session
            .as_any()
            .downcast_ref::<datafusion::execution::session_state::SessionState>()
            .and_then(|s| s.config().get_extension::<Declared>())
            .map(|d| d.of(&table))
            .unwrap_or_default();
        let sql = statement(&table, &columns, &declared, &window, &late);
        let plan = udfs::udtf::plan_inner(NAME, session, &sql)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// ` OR (event_type, field) is declared`, for the declared fields the
/// table has columns for.
fn declared_clause(declared: &[(String, String)], payload: &[&String]) -> String {
    let pairs: Vec<String> = declared
        .iter()
        .filter(|(_, f)| payload.contains(&f))
        .map(|(t, f)| text(&format!("{t}\u{1f}{f}")))
        .collect();
    match pairs.is_empty() {
        true => String::new(),
        false => format!(
            " OR concat(event_type, chr(31), field) IN ({})",
            pairs.join(", ")
        ),
    }
}

/// The measures' SQL over `table`, whose columns are `columns`.
fn statement(
    table: &str,
    columns: &[String],
    declared: &[(String, String)],
    window: &str,
    late: &str,
) -> String {
    let payload: Vec<&String> = columns
        .iter()
        .filter(|c| !FIXED_COLUMNS.contains(&c.as_str()) && !RESERVED_COLUMNS.contains(&c.as_str()))
        .collect();
    let lag = "(CAST(ingested_at AS BIGINT) - CAST(\"timestamp\" AS BIGINT)) / 1000000.0";
    let mut parts = vec![
        "SELECT event_type, CAST(NULL AS VARCHAR) AS field, 'events' AS measure, CAST(count(*) AS DOUBLE) AS value \
         FROM w GROUP BY event_type"
            .to_string(),
        "SELECT event_type, NULL, 'duplicate_event_ids', CAST(count(*) - count(DISTINCT event_id) AS DOUBLE) \
         FROM w GROUP BY event_type"
            .to_string(),
        format!(
            "SELECT event_type, NULL, 'lag_p50_seconds', percentile_cont({lag}, 0.5) FROM w GROUP BY event_type"
        ),
        format!(
            "SELECT event_type, NULL, 'lag_p95_seconds', percentile_cont({lag}, 0.95) FROM w GROUP BY event_type"
        ),
        format!("SELECT event_type, NULL, 'lag_max_seconds', max({lag}) FROM w GROUP BY event_type"),
        format!(
            "SELECT event_type, NULL, 'late_arrivals', CAST(count(*) FILTER (WHERE ingested_at - \"timestamp\" > {late}) AS DOUBLE) \
             FROM w GROUP BY event_type"
        ),
        "SELECT CAST(NULL AS VARCHAR), NULL, 'version_gaps', CAST(COALESCE(sum(missing), 0) AS DOUBLE) FROM \
         (SELECT max(version) - min(version) + 1 - count(*) AS missing FROM w WHERE version IS NOT NULL GROUP BY entity_id)"
            .to_string(),
        "SELECT CAST(NULL AS VARCHAR), NULL, 'out_of_order', CAST(count(*) FILTER (WHERE \"timestamp\" < before) AS DOUBLE) FROM \
         (SELECT \"timestamp\", lag(\"timestamp\") OVER (PARTITION BY entity_id ORDER BY position) AS before FROM w)"
            .to_string(),
    ];
    let distinct_rows: Vec<String> = ["event_type", "entity_id"]
        .iter()
        .map(|c| ident(c))
        .chain(payload.iter().map(|c| ident(c)))
        .collect();
    parts.push(format!(
        "SELECT event_type, NULL, 'duplicate_payloads', CAST(sum(copies - 1) AS DOUBLE) FROM \
         (SELECT event_type, count(*) AS copies FROM w GROUP BY {}) GROUP BY event_type",
        distinct_rows.join(", ")
    ));
    if !payload.is_empty() {
        let names: Vec<String> = payload.iter().map(|c| text(c)).collect();
        let shares: Vec<String> = payload
            .iter()
            .map(|c| format!("CAST(count({}) AS DOUBLE) / count(*)", ident(c)))
            .collect();
        parts.push(format!(
            "SELECT event_type, field, 'completeness', share FROM \
             (SELECT event_type, unnest(names) AS field, unnest(shares) AS share FROM \
              (SELECT event_type, make_array({}) AS names, make_array({}) AS shares FROM w GROUP BY event_type)) \
             WHERE share > 0{}",
            names.join(", "),
            shares.join(", "),
            declared_clause(declared, &payload)
        ));
    }
    if columns.iter().any(|c| c == VIOLATIONS) {
        parts.push(format!(
            "SELECT event_type, rule, 'violations', CAST(count(*) AS DOUBLE) FROM \
             (SELECT event_type, unnest(string_to_array(substr({v}, 3, length({v}) - 4), '\",\"')) AS rule \
              FROM w WHERE {v} IS NOT NULL) GROUP BY event_type, rule",
            v = ident(VIOLATIONS)
        ));
    }
    format!(
        "WITH w AS (SELECT * FROM {} WHERE ingested_at >= now() - {window}) {}",
        ident(table),
        parts.join(" UNION ALL ")
    )
}
