//! The MCP tools that move events: `replay_events` (a stored range, in
//! order) and `execute_pipeline` (define and start a pipeline).

use super::args::{PipelineArg, ReplayArgs};
use super::tools::{Parts, Tools};
use super::{columns_of, row_limit, rows_of, table, value};
use crate::service::Error;
use crate::service::pipelines::CreatePipeline;
use crate::service::replay::{End, Order, ReplayRequest};
use crate::service::subscribe::Start;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::tool;
use rmcp::tool_router;
use serde_json::json;

#[tool_router(router = flow_tools, vis = "pub(super)")]
impl Tools {
    #[tool(
        description = "Replay a stored range of a table's events in position order (from `earliest`, `after:N` or an RFC 3339 time, to `position:N` or a time), optionally filtered by an SQL condition; returns the first `limit` events (default 100).",
        annotations(read_only_hint = true)
    )]
    async fn replay_events(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<ReplayArgs>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let limit = row_limit(args.limit);
            let request = ReplayRequest {
                table: (args.table.parse())
                    .map_err(|e: crate::ids::InvalidName| Error::invalid(format!("table: {e}")))?,
                from: Start::parse(args.from.as_deref().unwrap_or("earliest"))
                    .map_err(Error::invalid)?,
                to: args.to.as_deref().map(End::parse).transpose().map_err(Error::invalid)?,
                filter: args.filter,
                where_dsl: None,
                speed: 0.0,
                order: Order::Sequential,
            };
            let mut replay = self.service().replay(&caller, request).await?;
            let (after, end) = (replay.after, replay.end);
            let mut batches = Vec::new();
            let mut held = 0usize;
            while held < limit {
                let Some(page) = replay.next().await else { break };
                for b in page? {
                    held += b.num_rows();
                    batches.push(b);
                }
            }
            drop(replay);
            let columns = batches.first().map(|b| columns_of(&b.schema())).unwrap_or_default();
            let mut rows = rows_of(&batches)?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let shown = rows.len();
            let mut result = table(&columns, rows, limit, "");
            let note = match more {
                true => format!(
                    "the first {shown} events of positions {after}..={end}; replay from after:<last position shown> for more"
                ),
                false => format!("{shown} events of positions {after}..={end}"),
            };
            result.content.push(ContentBlock::text(note));
            if let Some(s) = result.structured_content.as_mut() {
                s["range"] = json!({"after": after, "end": end, "more": more});
            }
            Ok(result)
        })
        .await
    }

    #[tool(
        description = "Define and start a pipeline (writers and admins): a source table, operators (filter, map, enrich, window, deduplicate, throttle...) and a sink table or subscription, as POST /v1/pipelines takes it. It runs in the background from its start position."
    )]
    async fn execute_pipeline(
        &self,
        Extension(parts): Extension<Parts>,
        Parameters(args): Parameters<PipelineArg>,
    ) -> CallToolResult {
        self.run(&parts, |caller| async move {
            let request: CreatePipeline = serde_json::from_value(args.pipeline)
                .map_err(|e| Error::invalid(format!("pipeline: {e}")))?;
            let info = self.service().create_pipeline(&caller, request).await?;
            value(&info, "started; it runs in the background")
        })
        .await
    }
}
