//! What an agent reads before it calls tools: resources (each readable
//! table's columns, and a reference of the analytics functions) and
//! prompts for common analyses.

use super::args::{ConversionArgs, SeriesPromptArgs};
use super::tools::Tools;
use super::{caller_of, rows_of};
use crate::query::quote_text;
use crate::service::query::Interface;
use futures::TryStreamExt;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    ListResourcesResult, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, Role,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, prompt, prompt_router};

/// The reference of the analytics functions, as `allsource://functions`.
const FUNCTIONS: &str = "\
AllSource SQL is DataFusion's dialect, read-only, over the tenant's tables (columns: event_id,
event_type, entity_id, timestamp, position, version, then one column per payload field).
Analytics functions:
- window_funnel(INTERVAL 'w', timestamp, cond1, cond2, ...): per entity (GROUP BY entity_id), the
  number of consecutive steps reached within the window from the first.
- retention(cond1, cond2, ...): per entity, an array of booleans: cond1 and each later one.
- percentile_cont(p) WITHIN GROUP (ORDER BY x), approx_percentile_cont, approx_distinct, median.
- is_anomaly(x, method, k) OVER (...), anomaly_score(x, method) OVER (...): methods zscore, mad, iqr.
- Table functions, each over an inner query given as text:
  gapfill('SQL', 'time column', INTERVAL 'step', start, end, 'zero'|'null'|'previous'|'linear'),
  trend('SQL', 'time column', 'value column'), detect_anomalies('SQL', 'value column', 'method'),
  cohorts('SQL', ...), data_quality('table', INTERVAL 'window').
- Time: date_bin(INTERVAL '1 hour', timestamp), date_trunc('day', timestamp), now().
- Reading the past: as_of(table, position => N) or \"table@pN\".";

fn failed(e: crate::service::Error) -> McpError {
    McpError::invalid_request(e.message, None)
}

impl Tools {
    /// Each table the caller may read, and the function reference.
    pub(super) async fn resources(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let caller = parts
            .ok_or_else(|| McpError::internal_error("no request", None))
            .and_then(|p| caller_of(p).map_err(failed))?;
        let sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1";
        let (stream, _) = (self.service())
            .sql_read(&caller, sql, None, None, false, Interface::Mcp)
            .await
            .map_err(failed)?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|e| failed(e.into()))?;
        let mut resources = vec![
            Resource::new("allsource://functions", "functions")
                .with_description("The analytics functions and table functions of AllSource SQL"),
        ];
        for row in rows_of(&batches).map_err(failed)? {
            let Some(name) = row["table_name"].as_str() else {
                continue;
            };
            resources.push(
                Resource::new(format!("allsource://tables/{name}"), name)
                    .with_description(format!("The columns of table {name} and their types")),
            );
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    /// One resource's text.
    pub(super) async fn resource(
        &self,
        request: ReadResourceRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri == "allsource://functions" {
            return Ok(ReadResourceResult::new(vec![ResourceContents::text(
                FUNCTIONS,
                request.uri,
            )])
            .into());
        }
        let Some(table) = request.uri.strip_prefix("allsource://tables/") else {
            return Err(McpError::resource_not_found(
                format!("no resource {:?}", request.uri),
                None,
            ));
        };
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let caller = parts
            .ok_or_else(|| McpError::internal_error("no request", None))
            .and_then(|p| caller_of(p).map_err(failed))?;
        let sql = format!(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = 'public' AND table_name = {} ORDER BY ordinal_position",
            quote_text(table)
        );
        let (stream, _) = (self.service())
            .sql_read(&caller, &sql, None, None, false, Interface::Mcp)
            .await
            .map_err(failed)?;
        let batches: Vec<_> = stream.try_collect().await.map_err(|e| failed(e.into()))?;
        let columns = rows_of(&batches).map_err(failed)?;
        if columns.is_empty() {
            return Err(McpError::resource_not_found(
                format!("no table {table:?}"),
                None,
            ));
        }
        let text = serde_json::json!({"table": table, "columns": columns}).to_string();
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }
}

#[prompt_router(router = "prompt_router", vis = "pub(super)")]
impl Tools {
    #[prompt(
        name = "investigate_conversion_drop",
        description = "Investigate a drop in conversion through a funnel of event types"
    )]
    async fn investigate_conversion_drop(
        &self,
        Parameters(args): Parameters<ConversionArgs>,
    ) -> Vec<PromptMessage> {
        let days = args.days.unwrap_or(30);
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Investigate the conversion through the funnel {steps} in table {table} over the last {days} days.\n\
                 1. Call describe_table and list_event_types for {table} to learn its columns and check the step names.\n\
                 2. Call funnel_analysis with steps [{steps}] and window \"1 day\": note the biggest drop-off.\n\
                 3. Call time_series_analysis for the event type after the drop (interval \"1 day\", days {days}) and detect_anomalies on it, to find when the drop began.\n\
                 4. Use advanced_query to compare the entities that continued with those that stopped (by a payload field such as plan, country or device).\n\
                 Report the drop with its numbers, when it began, and the likely cause, quoting the queries you ran.",
                steps = args.steps,
                table = args.table,
            ),
        )]
    }

    #[prompt(
        name = "find_unusual_activity",
        description = "Find unusual hours or days in a table's activity"
    )]
    async fn find_unusual_activity(
        &self,
        Parameters(args): Parameters<SeriesPromptArgs>,
    ) -> Vec<PromptMessage> {
        let interval = args.interval.unwrap_or_else(|| "1 hour".into());
        vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Find unusual activity in table {table}.\n\
                 1. Call time_series_analysis for {table} with interval \"{interval}\" over the last 7 days.\n\
                 2. Call detect_anomalies with the SQL `SELECT date_bin(INTERVAL '{interval}', timestamp) AS t, count(*) AS n FROM {table} GROUP BY 1 ORDER BY 1` and column n.\n\
                 3. For each anomaly, use advanced_query to see which event types and entities made it.\n\
                 Report each unusual period with its count against the usual level.",
                table = args.table,
            ),
        )]
    }
}
