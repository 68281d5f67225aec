//! The MCP tools that analyse a table: `time_series_analysis` (a gap-filled
//! series, or its trend and forecast), `funnel_analysis` and
//! `detect_anomalies`.

use super::args::{AnomalyArgs, FunnelArgs, SeriesArgs};
use super::tools::{MAX_SERIES, Parts, Tools, as_table, collect, interval_text};
use super::{row_limit, table};
use crate::query::{quote_ident, quote_text};
use crate::service::Error;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::tool;
use rmcp::tool_router;
use serde_json::json;

#[tool_router(router = analysis_tools, vis = "pub(super)")]
impl Tools {
    #[tool(
        description = "A time series of a table's events: counts (or the sum/avg/min/max of a field) per bucket over the last N days, gap-filled with zeros, optionally split by a column. With `trend` or `forecast`, one series with its fitted trend (linear or Holt smoothing) and `forecast` buckets predicted past now.",
        annotations(read_only_hint = true)
    )]
    async fn time_series_analysis(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SeriesArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let metric = match (&args.field, args.aggregate.as_deref()) {
                (None, _) => json!(["count"]),
                (Some(f), None | Some("sum")) => json!(["sum", f]),
                (Some(f), Some(a @ ("avg" | "min" | "max"))) => json!([a, f]),
                (Some(_), Some(other)) => {
                    return Err(Error::invalid(format!(
                        "aggregate: {other:?} is not one of sum, avg, min, max"
                    )));
                }
            };
            let days = args.days.unwrap_or(7).clamp(1, 3660);
            let range = json!({"start": ["days-ago", days], "end": ["now"], "fill": "zero"});
            let form = if args.trend.is_some() || args.forecast.is_some() {
                if args.by.is_some() {
                    return Err(Error::invalid(
                        "by: a trend is fitted to one series; leave out by, or filter with event_type",
                    ));
                }
                let method = args.trend.as_deref().unwrap_or("linear");
                if !matches!(method, "linear" | "holt") {
                    return Err(Error::invalid(format!(
                        "trend: {method:?} is not linear or holt"
                    )));
                }
                let mut trend = json!({"metric": metric, "interval": args.interval,
                                       "periods": args.forecast.unwrap_or(0).min(1000),
                                       "method": method});
                trend.as_object_mut().unwrap().extend(range.as_object().unwrap().clone());
                ("trend", trend)
            } else {
                let aggregation = match &args.field {
                    None => metric,
                    Some(_) => json!(["as", metric, "value"]),
                };
                let mut series = json!({"interval": args.interval, "aggregations": [aggregation]});
                series.as_object_mut().unwrap().extend(range.as_object().unwrap().clone());
                if let Some(by) = &args.by {
                    series["by"] = json!(by);
                }
                ("time-series", series)
            };
            let mut doc = json!({"from": args.table});
            doc[form.0] = form.1;
            if let Some(t) = &args.event_type {
                doc["where"] = json!(["=", "event_type", t]);
            }
            let doc = serde_json::to_vec(&doc).map_err(|e| Error::invalid(e.to_string()))?;
            let (stream, _) = self.service().dsl_read(&caller, &doc, None, false).await?;
            let found = collect(stream, MAX_SERIES).await?;
            Ok(as_table(
                found,
                MAX_SERIES,
                "use a wider interval or fewer days",
            ))
        })
        .await
    }

    #[tool(
        description = "A conversion funnel: how many entities reached each step (event types in order) within the window from their first step, with the conversion from the previous step and the biggest drop-off (the step that the smallest share of the previous step's entities reaches).",
        annotations(read_only_hint = true)
    )]
    async fn funnel_analysis(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<FunnelArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            if !(2..=32).contains(&args.steps.len()) {
                return Err(Error::invalid("steps: give 2 to 32 event types, in order"));
            }
            let window = interval_text("window", &args.window)?;
            let days = args.days.unwrap_or(30).clamp(1, 3660);
            let conditions: Vec<String> = args
                .steps
                .iter()
                .map(|s| format!("event_type = {}", quote_text(s)))
                .collect();
            let sql = format!(
                "SELECT level, count(*) AS entities FROM (SELECT entity_id, window_funnel(INTERVAL {}, timestamp, {}) AS level FROM {} WHERE timestamp >= now() - INTERVAL '{days} days' GROUP BY entity_id) GROUP BY level",
                quote_text(&window),
                conditions.join(", "),
                quote_ident(&args.table),
            );
            let (_, levels, _) = self.sql(&caller, &sql, 100).await?;
            let at_level = |l: usize| -> u64 {
                levels
                    .iter()
                    .filter(|r| r["level"].as_u64().is_some_and(|v| v as usize >= l))
                    .map(|r| r["entities"].as_u64().unwrap_or(0))
                    .sum()
            };
            let mut rows = Vec::new();
            let mut worst: Option<(usize, f64)> = None;
            for (i, step) in args.steps.iter().enumerate() {
                let reached = at_level(i + 1);
                let before = if i == 0 { reached } else { at_level(i) };
                let rate = match before {
                    0 => 0.0,
                    b => reached as f64 / b as f64,
                };
                if i > 0 && worst.is_none_or(|(_, w)| rate < w) {
                    worst = Some((i, rate));
                }
                rows.push(json!({"step": i + 1, "event_type": step, "entities": reached,
                                 "from_previous": (rate * 10000.0).round() / 10000.0}));
            }
            let columns = ["step", "event_type", "entities", "from_previous"];
            let mut result = table(&columns, rows, 100, "");
            if let Some((i, rate)) = worst {
                let note = format!(
                    "biggest drop-off: from {} to {} ({:.1}% continue)",
                    args.steps[i - 1],
                    args.steps[i],
                    rate * 100.0
                );
                result.content.push(rmcp::model::ContentBlock::text(note));
                if let Some(s) = result.structured_content.as_mut() {
                    s["biggest_drop"] = json!({"from": args.steps[i - 1], "to": args.steps[i],
                                               "continue_rate": rate});
                }
            }
            Ok(result)
        })
        .await
    }

    #[tool(
        description = "Find anomalies in a series: runs `sql` (one row per point, in order) and scores `column` by zscore, mad or iqr; anomalies first.",
        annotations(read_only_hint = true)
    )]
    async fn detect_anomalies(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<AnomalyArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let limit = row_limit(args.limit);
            let sql = format!(
                "SELECT * FROM detect_anomalies({}, {}, {}) ORDER BY is_anomaly DESC, abs(score) DESC",
                quote_text(&args.sql),
                quote_text(&args.column),
                quote_text(args.method.as_deref().unwrap_or("mad")),
            );
            let found = self.sql(&caller, &sql, limit).await?;
            Ok(as_table(found, limit, "ask for more rows with limit"))
        })
        .await
    }
}
