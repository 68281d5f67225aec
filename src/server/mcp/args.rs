//! The arguments of the MCP tools: their doc comments are the
//! descriptions an agent reads in each tool's JSON schema.

use rmcp::schemars;
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct NoArgs {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct TableArg {
    /// A table of the caller's tenant (see list_tables).
    pub(crate) table: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SampleArgs {
    /// A table of the caller's tenant.
    pub(crate) table: String,
    /// How many of the latest events (default 10, at most 1000).
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SqlArg {
    /// One SQL statement (DataFusion's dialect, read-only).
    pub(crate) sql: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct QueryArgs {
    /// One read-only SQL statement over the tenant's tables, e.g.
    /// `SELECT event_type, count(*) FROM events GROUP BY 1`. Give this or `dsl`.
    pub(crate) sql: Option<String>,
    /// A JSON query document (`{"from": "events", "where": [...], ...}`), instead of `sql`.
    pub(crate) dsl: Option<Value>,
    /// Rows to return (default 100, at most 1000); the rest are counted.
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SeriesArgs {
    /// The table.
    pub(crate) table: String,
    /// Bucket width: "15 minutes", "1 hour", "1 day", or a number of seconds.
    pub(crate) interval: String,
    /// Only events of this type.
    pub(crate) event_type: Option<String>,
    /// A numeric field to aggregate; without it, events are counted.
    pub(crate) field: Option<String>,
    /// How to aggregate `field`: sum (default), avg, min or max.
    pub(crate) aggregate: Option<String>,
    /// A column to split the series by.
    pub(crate) by: Option<String>,
    /// The last N days up to now, gap-filled with zeros (default 7).
    pub(crate) days: Option<u32>,
    /// Fit a trend to the series: "linear" (least squares) or "holt"
    /// (double exponential smoothing). Not with `by`.
    pub(crate) trend: Option<String>,
    /// Buckets to forecast past now with the trend (at most 1000; implies
    /// a linear trend unless `trend` says otherwise).
    pub(crate) forecast: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct FunnelArgs {
    /// The table.
    pub(crate) table: String,
    /// The funnel's event types, in order (2 to 32).
    pub(crate) steps: Vec<String>,
    /// How long an entity has from its first step: "1 hour", "1 day", "7 days"...
    pub(crate) window: String,
    /// Only events of the last N days (default 30).
    pub(crate) days: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct AnomalyArgs {
    /// An SQL query giving one row per point of the series, in order.
    pub(crate) sql: String,
    /// The numeric column of `sql` to examine.
    pub(crate) column: String,
    /// zscore, mad (default) or iqr.
    pub(crate) method: Option<String>,
    /// Rows to return (default 100); anomalies come first.
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ValidateArgs {
    /// The table whose rules apply.
    pub(crate) table: String,
    /// Events as /v1/events takes them: objects with event_type, entity_id, payload...
    pub(crate) events: Vec<Value>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct PolicyArg {
    /// The policy, as POST /v1/policies takes it: name, kind (access, row_filter, mask, quota),
    /// principals, tables and the kind's fields.
    pub(crate) policy: Value,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct EvaluateArgs {
    /// ingest, query, stream or admin.
    pub(crate) action: String,
    /// The table decided on (or give `sql`).
    pub(crate) table: Option<String>,
    /// A statement: every table it names is decided on.
    pub(crate) sql: Option<String>,
    /// For ingest: the events' type.
    pub(crate) event_type: Option<String>,
    /// Decide for this role instead of the caller (admins only).
    pub(crate) role: Option<String>,
    /// ... and this subject.
    pub(crate) subject: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct StateArgs {
    /// The projection.
    pub(crate) name: String,
    /// The key: one value per GROUP BY column, as text; all rows when absent.
    pub(crate) key: Option<Vec<String>>,
    /// Rows to return (default 100).
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ProjectionArgs {
    /// A name: lower-case letters, digits and _.
    pub(crate) name: String,
    /// `SELECT key..., agg... FROM table [WHERE ...] GROUP BY key...` with
    /// count, sum, min, max, avg, count(DISTINCT), first_value/last_value.
    pub(crate) query: String,
    /// The version (default 1); a higher one replaces the serving version once built.
    pub(crate) version: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ReplayArgs {
    /// The table.
    pub(crate) table: String,
    /// Where to start: "earliest" (default), "after:N" (a position) or an RFC 3339 time.
    pub(crate) from: Option<String>,
    /// Where to stop: "position:N" or an RFC 3339 time; the last stored event when absent.
    pub(crate) to: Option<String>,
    /// An SQL condition on the events, e.g. "event_type = 'purchase'".
    pub(crate) filter: Option<String>,
    /// Events to return (default 100, at most 1000).
    pub(crate) limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct PipelineArg {
    /// The pipeline, as POST /v1/pipelines takes it, e.g. {"name": "big_orders",
    /// "source": {"table": "events", "start": "earliest"}, "operators": [{"op": "filter",
    /// "where": "amount > 100"}], "sink": {"table": "big_orders"}}.
    pub(crate) pipeline: Value,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct ConversionArgs {
    /// The table of events.
    pub(crate) table: String,
    /// The funnel's event types in order, comma-separated.
    pub(crate) steps: String,
    /// How many days back to look (default 30).
    pub(crate) days: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(crate) struct SeriesPromptArgs {
    /// The table of events.
    pub(crate) table: String,
    /// The bucket width, e.g. "1 hour" (the default) or "1 day".
    pub(crate) interval: Option<String>,
}
