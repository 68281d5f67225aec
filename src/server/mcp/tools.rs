//! The MCP tools: each a thin translation of its arguments into one
//! service call (or an SQL statement built from quoted arguments), run as
//! the caller.

use super::{caller_of, columns_of, failed, row_limit, rows_of, table, value};
use crate::auth::Principal;
use crate::query::quote_ident;
use crate::service::query::Interface;
use crate::service::{Error, Service};
use arrow::array::RecordBatch;
use futures::TryStreamExt;
use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, prompt_handler, tool, tool_handler,
    tool_router,
};
use serde_json::{Value, json};
use std::sync::Arc;

use super::args::*;

pub(super) type Parts = axum::http::request::Parts;

/// The tools, for one MCP session.
#[derive(Clone)]
pub(crate) struct Tools {
    service: Arc<Service>,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

/// A duration as SQL interval text, refused when it is not one.
pub(super) fn interval_text(what: &str, text: &str) -> Result<String, Error> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '.');
    match ok {
        true => Ok(text.to_string()),
        false => Err(Error::invalid(format!(
            "{what}: {text:?} is not a duration such as \"1 hour\" or \"7 days\""
        ))),
    }
}

impl Tools {
    pub(crate) fn new(service: Arc<Service>) -> Self {
        Tools {
            service,
            tool_router: Self::tool_router() + Self::flow_tools() + Self::analysis_tools(),
            prompt_router: Self::prompt_router(),
        }
    }

    pub(super) fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Runs `sql` as `caller`: the columns, the first `limit` rows, and
    /// how many there were in all.
    pub(super) async fn sql(
        &self,
        caller: &Principal,
        sql: &str,
        limit: usize,
    ) -> Result<(Vec<String>, Vec<Value>, usize), Error> {
        let (stream, _) = self
            .service
            .sql_read(caller, sql, None, None, false, Interface::Mcp)
            .await?;
        collect(stream, limit).await
    }

    /// Runs `call` as the request's caller; an error is a tool error.
    pub(super) async fn run<F, Fut>(&self, parts: &Parts, call: F) -> CallToolResult
    where
        F: FnOnce(Principal) -> Fut,
        Fut: std::future::Future<Output = Result<CallToolResult, Error>>,
    {
        let caller = match caller_of(parts) {
            Ok(c) => c,
            Err(e) => return failed(e),
        };
        call(caller).await.unwrap_or_else(failed)
    }
}

/// The first `limit` rows of `stream`, and how many it had.
pub(super) async fn collect(
    stream: datafusion::execution::SendableRecordBatchStream,
    limit: usize,
) -> Result<(Vec<String>, Vec<Value>, usize), Error> {
    let columns = columns_of(&stream.schema());
    let mut kept: Vec<RecordBatch> = Vec::new();
    let (mut held, mut total) = (0usize, 0usize);
    let mut stream = stream;
    while let Some(batch) = stream.try_next().await.map_err(Error::from)? {
        total += batch.num_rows();
        if held < limit {
            let take = (limit - held).min(batch.num_rows());
            kept.push(batch.slice(0, take));
            held += take;
        }
    }
    Ok((columns, rows_of(&kept)?, total))
}

pub(super) fn as_table(
    found: (Vec<String>, Vec<Value>, usize),
    limit: usize,
    narrow: &str,
) -> CallToolResult {
    let (columns, mut rows, total) = found;
    // The rows past the limit were counted, not kept: the note says how many.
    let padding = total.saturating_sub(rows.len());
    rows.extend(std::iter::repeat_n(Value::Null, padding));
    table(&columns, rows, limit, narrow)
}

#[tool_router]
impl Tools {
    #[tool(
        description = "List the tenant's tables with their row counts and the time range of their events.",
        annotations(read_only_hint = true)
    )]
    async fn list_tables(&self, Extension(parts): Extension<Parts>) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let (_, tables, _) = self
                .sql(&caller, "SELECT table_name FROM system.tables ORDER BY 1", 1000)
                .await?;
            let mut rows = Vec::new();
            let names = (self.service.db()).table_names(&caller.tenant);
            for name in names {
                let sql = format!(
                    "SELECT count(*) AS events, min(timestamp) AS first_event, max(timestamp) AS last_event FROM {}",
                    quote_ident(&name)
                );
                // A table the caller may not read is left out; one that
                // cannot be counted now is listed with the reason.
                let mut row = match self.sql(&caller, &sql, 1).await {
                    Ok((_, found, _)) => found.into_iter().next().unwrap_or(json!({})),
                    Err(e) if e.kind == crate::service::Kind::Forbidden => continue,
                    Err(e) => json!({"error": e.message}),
                };
                row["table"] = json!(name);
                row["described"] = json!(tables.iter().any(|t| t["table_name"] == name));
                rows.push(row);
            }
            let columns = ["table", "events", "first_event", "last_event"];
            Ok(table(&columns, rows, 1000, ""))
        })
        .await
    }

    #[tool(
        description = "Describe a table: its columns with their types, and a few example values of each.",
        annotations(read_only_hint = true)
    )]
    async fn describe_table(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TableArg>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let sample = format!(
                "SELECT * FROM {} ORDER BY position DESC LIMIT 3",
                quote_ident(&args.table)
            );
            let (stream, _) = self
                .service
                .sql_read(&caller, &sample, None, None, false, Interface::Mcp)
                .await?;
            let schema = stream.schema();
            let (_, examples, _) = collect(stream, 3).await?;
            let rows: Vec<Value> = schema
                .fields()
                .iter()
                .map(|f| {
                    let seen: Vec<String> = examples
                        .iter()
                        .map(|r| super::cell(&r[f.name().as_str()]))
                        .filter(|v| !v.is_empty())
                        .collect();
                    json!({"column": f.name(), "type": f.data_type().to_string(),
                           "nullable": f.is_nullable(), "examples": seen.join(", ")})
                })
                .collect();
            let columns = ["column", "type", "nullable", "examples"];
            Ok(table(&columns, rows, 1000, ""))
        })
        .await
    }

    #[tool(
        description = "List a table's event types with how many events each has, most frequent first.",
        annotations(read_only_hint = true)
    )]
    async fn list_event_types(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<TableArg>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let sql = format!(
                "SELECT event_type, count(*) AS events FROM {} GROUP BY 1 ORDER BY 2 DESC, 1",
                quote_ident(&args.table)
            );
            let found = self.sql(&caller, &sql, 1000).await?;
            Ok(as_table(found, 1000, "query the table with a WHERE"))
        })
        .await
    }

    #[tool(
        description = "The latest events of a table, newest first (default 10).",
        annotations(read_only_hint = true)
    )]
    async fn sample_events(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SampleArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let limit = args.limit.map_or(10, |n| n.clamp(1, 1000));
            let sql = format!(
                "SELECT * FROM {} ORDER BY position DESC LIMIT {limit}",
                quote_ident(&args.table)
            );
            let found = self.sql(&caller, &sql, limit as usize).await?;
            Ok(as_table(found, limit as usize, ""))
        })
        .await
    }

    #[tool(
        description = "Explain how a SQL statement would run (its plan), without running it.",
        annotations(read_only_hint = true)
    )]
    async fn explain_query(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<SqlArg>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let found = self
                .sql(&caller, &format!("EXPLAIN {}", args.sql), 100)
                .await?;
            Ok(as_table(found, 100, ""))
        })
        .await
    }

    #[tool(
        description = "Run a read-only SQL query (or a JSON query document) over the tenant's tables. Analytics functions: window_funnel, retention, percentile_cont, approx_distinct, gapfill(...), trend(...), detect_anomalies(...), cohorts(...), data_quality(...). Returns at most `limit` rows (default 100) and says how many were left out.",
        annotations(read_only_hint = true)
    )]
    async fn advanced_query(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<QueryArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let limit = row_limit(args.limit);
            let stream = match (&args.sql, &args.dsl) {
                (Some(sql), None) => {
                    let read =
                        (self.service).sql_read(&caller, sql, None, None, false, Interface::Mcp);
                    read.await?.0
                }
                (None, Some(doc)) => {
                    let doc = serde_json::to_vec(doc).map_err(|e| Error::invalid(e.to_string()))?;
                    self.service.dsl_read(&caller, &doc, None, false).await?.0
                }
                _ => return Err(Error::invalid("give either sql or dsl")),
            };
            let found = collect(stream, limit).await?;
            Ok(as_table(
                found,
                limit,
                "add a LIMIT, aggregate, or narrow the WHERE",
            ))
        })
        .await
    }

    #[tool(
        description = "Check events against a table's schemas and validation rules without storing them: every violation with its JSON path and rule.",
        annotations(read_only_hint = true)
    )]
    async fn validate_events(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ValidateArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let body =
                serde_json::to_vec(&args.events).map_err(|e| Error::invalid(e.to_string()))?;
            let events =
                crate::ingest::parse_body(&body, crate::ingest::BodyFormat::Json, &mut |_| Ok(()))
                    .map_err(|e| Error::invalid(e.to_string()))?;
            let report = self.service.validate(&caller, &args.table, events).await?;
            let summary = format!(
                "{} events: {}",
                report.events,
                if report.valid {
                    "valid"
                } else {
                    "some would be refused"
                }
            );
            value(&report, &summary)
        })
        .await
    }

    #[tool(
        description = "List the tenant's policies (access, row filters, masks, quotas); admins only.",
        annotations(read_only_hint = true)
    )]
    async fn list_policies(&self, Extension(parts): Extension<Parts>) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let list = self.service.list_policies(&caller)?;
            value(&list, &format!("{} policies", list.policies.len()))
        })
        .await
    }

    #[tool(description = "Create a policy (admins only): access, row_filter, mask or quota.")]
    async fn create_policy(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PolicyArg>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let changed = self.service.create_policy(&caller, args.policy)?;
            value(&changed, "created")
        })
        .await
    }

    #[tool(
        description = "Explain what the policies decide for a request (the caller's own, or another principal's for admins): allow or deny, which policy decided and why, the row filter and masks.",
        annotations(read_only_hint = true)
    )]
    async fn evaluate_policy(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<EvaluateArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let mut request = json!({"action": args.action, "table": args.table, "sql": args.sql,
                                     "event_type": args.event_type});
            if let Some(role) = args.role {
                request["principal"] = json!({"role": role, "subject": args.subject});
            }
            let request = serde_json::from_value(request)
                .map_err(|e| Error::invalid(format!("arguments: {e}")))?;
            let v = self.service.evaluate_policy(&caller, request)?;
            let summary = format!(
                "{}: {}",
                v["decision"].as_str().unwrap_or("?"),
                v["because"].as_str().unwrap_or("see tables")
            );
            value(v, &summary)
        })
        .await
    }

    #[tool(
        description = "List the tenant's projections (continuously maintained aggregate queries) with their lag and size.",
        annotations(read_only_hint = true)
    )]
    async fn list_projections(&self, Extension(parts): Extension<Parts>) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let list = self.service.list_projections(&caller)?;
            let summary = format!("{} projections", list.len());
            value(json!({"projections": list}), &summary)
        })
        .await
    }

    #[tool(
        description = "A projection's current state: all rows, or the row of one key.",
        annotations(read_only_hint = true)
    )]
    async fn get_projection_state(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<StateArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let name = (args.name.parse())
                .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("name: {e}")))?;
            let (batch, position) =
                self.service
                    .projection_rows(&caller, &name, args.key.as_deref())?;
            let limit = row_limit(args.limit);
            let mut result = table(
                &columns_of(&batch.schema()),
                rows_of(&[batch])?,
                limit,
                "give a key",
            );
            result.content.push(rmcp::model::ContentBlock::text(format!(
                "as of position {position}"
            )));
            if let Some(s) = result.structured_content.as_mut() {
                s["position"] = json!(position);
            }
            Ok(result)
        })
        .await
    }

    #[tool(
        description = "Create a projection: a GROUP BY query kept up to date from every new event, readable as projections.<name> and with get_projection_state. Writers and admins only."
    )]
    async fn create_projection(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ProjectionArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let name = (args.name.parse())
                .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("name: {e}")))?;
            let request = crate::service::projections::CreateProjection {
                name,
                version: args.version.unwrap_or(1),
                query: args.query,
                language: crate::projection::Language::Sql,
                manual_promote: false,
            };
            let (info, _) = self.service.create_projection(&caller, request).await?;
            value(
                &info,
                "created; it folds the table's events in the background",
            )
        })
        .await
    }

    #[tool(
        description = "Whether the server is healthy; the tables' sizes and last compaction, projections' and subscriptions' lag, events ingested since the server started, and the tenant's events and queries per second over the last minute.",
        annotations(read_only_hint = true)
    )]
    async fn health(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(_): Parameters<NoArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let status = match self.service.health() {
                Ok(()) => "ok".to_string(),
                Err(e) => e.message,
            };
            let (_, tables, _) = self
                .sql(&caller, "SELECT table_name, files, bytes, rows, buffered_rows, last_compaction FROM system.tables ORDER BY 1", 1000)
                .await?;
            let projections: Vec<Value> = self
                .service
                .list_projections(&caller)
                .unwrap_or_default()
                .iter()
                .map(|p| json!({"name": p.name, "table": p.table, "lag_positions": p.lag_positions, "rows": p.rows}))
                .collect();
            let (_, subscriptions, _) = self
                .sql(&caller, "SELECT name, table_name, consumers, committed_position, lag_positions FROM system.subscriptions ORDER BY 1", 1000)
                .await?;
            let ingested = crate::metrics::get()
                .ingest_events
                .with_label_values(&[caller.tenant.as_str()])
                .get();
            let (events_per_second, queries_per_second) = self.service.rates(&caller);
            let v = json!({"status": status, "tables": tables, "projections": projections,
                           "subscriptions": subscriptions,
                           "events_ingested_since_start": ingested,
                           "last_minute": {"events_per_second": events_per_second,
                                           "queries_per_second": queries_per_second}});
            value(v, &format!("status: {status}"))
        })
        .await
    }
}

/// Buckets a series tool returns at most.
pub(super) const MAX_SERIES: usize = 1000;

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for Tools {
    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.resources(&context).await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.resource(request, &context).await
    }

    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_prompts()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("allsource", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "AllSource stores events (event_type, entity_id, timestamp, payload fields as columns) in tables. Start with list_tables and describe_table; answer questions with advanced_query (SQL), time_series_analysis, funnel_analysis and detect_anomalies. Every tool runs with the caller's token: its tenant, role and policies.",
            )
    }
}
