//! Planning a statement for a FlightInfo or a prepared statement, under
//! the same limits as a query, and its ticket.

use super::FlightSql;
use super::results::wire_schema;
use super::tickets::{TicketBody, encode_params};
use super::{df_status, invalid};
use crate::auth::Principal;
use crate::query;
use crate::ratelimit::Kind;
use crate::server::http::audit_refused_statement;
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use bytes::Bytes;
use datafusion::error::DataFusionError;
use prost::Message;
use tonic::Status;

/// What planning a statement tells a client before it runs.
#[derive(Debug)]
pub(super) struct Planned {
    /// The schema of its results, as sent.
    pub(super) dataset: SchemaRef,
    /// Its placeholders (`$1`, ...) and the type each was inferred to have
    /// (`Null` when none was).
    pub(super) parameters: Schema,
}

impl FlightSql {
    /// Plans `sql` (with `params` bound) for `caller` as a query is run:
    /// under the tenant's query rate, with one of its query slots, on the
    /// query threads and within the query timeout, so that planning costs
    /// the caller what running would.
    pub(super) async fn plan(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
    ) -> Result<Planned, Status> {
        let db = &self.inner.db;
        self.rate_check(&caller.tenant, Kind::Queries, 1)?;
        db.limits()
            .settings
            .sql
            .check_size("the SQL text", sql.len())
            .map_err(invalid)?;
        let (session_db, who, text) = (db.clone(), caller.clone(), sql.to_string());
        let planned = query::limits::plan_limited(
            db.limits(),
            db.query_threads(),
            &caller.tenant,
            async move {
                let ctx = query::session(session_db, &who)?;
                let mut plan = query::plan_sql(&ctx, &text).await?;
                let parameters = query::parameters(&plan)?;
                if let Some(params) = &params {
                    plan = query::bind(plan, params)?;
                }
                Ok::<_, DataFusionError>(Planned {
                    dataset: wire_schema(plan.schema().as_arrow()),
                    parameters: Schema::new(
                        parameters
                            .into_iter()
                            .map(|(name, ty)| Field::new(name, ty.unwrap_or(DataType::Null), true))
                            .collect::<Vec<_>>(),
                    ),
                })
            },
        )
        .await;
        planned.map_err(|e| {
            audit_refused_statement(db, caller, sql, &e);
            df_status(e)
        })
    }

    pub(super) fn statement_ticket(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<Bytes, Status> {
        let body = TicketBody {
            tenant: caller.tenant.to_string(),
            sql: sql.to_string(),
            params: params.map(encode_params).transpose()?,
        };
        let handle = self.inner.tickets.seal(&body)?;
        Ok(TicketStatementQuery {
            statement_handle: handle,
        }
        .as_any()
        .encode_to_vec()
        .into())
    }
}
