//! Planning a statement for a FlightInfo, and its ticket.

use super::FlightSql;
use super::df_status;
use super::results::wire_schema;
use super::tickets::{TicketBody, encode_params};
use crate::auth::Principal;
use crate::query;
use crate::server::http::audit_refused_statement;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use bytes::Bytes;
use prost::Message;
use tonic::Status;

impl FlightSql {
    /// Plans `sql` for `caller` and returns the schema its results will
    /// have on the wire.
    pub(super) async fn result_schema(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<SchemaRef, Status> {
        let ctx = query::session(self.inner.db.clone(), caller).map_err(df_status)?;
        let mut plan = query::plan_sql(&ctx, sql).await.map_err(|e| {
            audit_refused_statement(&self.inner.db, caller, sql, &e);
            df_status(e)
        })?;
        if let Some(params) = params {
            plan = query::bind(plan, params).map_err(df_status)?;
        }
        Ok(wire_schema(plan.schema().as_arrow()))
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
