//! Planning a statement for a FlightInfo or a prepared statement, under
//! the same limits as a query, and its ticket.

use super::FlightSql;
use super::results::wire_schema;
use super::tickets::{TicketBody, encode_params};
use crate::auth::Principal;
use crate::service::query::Planned;
use arrow::array::RecordBatch;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use bytes::Bytes;
use prost::Message;
use tonic::Status;

impl FlightSql {
    /// Plans `sql` (with `params` bound) for `caller` as the service plans
    /// a query, with the result schema as it is sent.
    pub(super) async fn plan(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<RecordBatch>,
    ) -> Result<Planned, Status> {
        let mut planned = self
            .service()
            .plan(
                caller,
                sql,
                params,
                crate::service::query::Interface::Flight,
            )
            .await?;
        planned.dataset = wire_schema(&planned.dataset);
        Ok(planned)
    }

    /// The ticket of a statement: sealed, so that what it reads (the
    /// statement, its parameters, `raw`) cannot be changed by the client.
    pub(super) fn statement_ticket(
        &self,
        caller: &Principal,
        sql: &str,
        params: Option<&RecordBatch>,
        raw: bool,
    ) -> Result<Bytes, Status> {
        let body = TicketBody {
            tenant: caller.tenant.to_string(),
            sql: sql.to_string(),
            params: params.map(encode_params).transpose()?,
            raw,
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
