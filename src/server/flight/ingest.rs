//! Bulk ingest over Flight: the uploaded batches go to the service's
//! [`Upload`](crate::service::ingest::Upload), each through the WAL like an
//! HTTP request's.

use super::{FlightSql, invalid};
use crate::auth::Principal;
use crate::ids::TableName;
use crate::service::ingest::Totals;
use crate::service::{Error, Kind};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::StreamExt;
use tonic::Status;

impl FlightSql {
    pub(super) async fn ingest(
        &self,
        caller: Principal,
        table: TableName,
        mut batches: FlightRecordBatchStream,
    ) -> Result<Totals, Status> {
        let mut upload = self.service().upload(&caller, table);
        let mut failure: Option<Error> = None;
        // A status of the client's stream (a message over the size limit,
        // a cancelled call) is answered as it came.
        let mut stream_status: Option<Status> = None;
        while let Some(next) = batches.next().await {
            let batch = match next {
                Ok(b) => b,
                Err(FlightError::Tonic(s)) => {
                    stream_status = Some(*s);
                    break;
                }
                Err(other) => {
                    failure = Some(Error::invalid(format!(
                        "the uploaded data is not valid Arrow IPC: {other}"
                    )));
                    break;
                }
            };
            if let Err(e) = upload.push(batch).await {
                failure = Some(e);
                break;
            }
        }
        if let Some(status) = stream_status {
            // The kind only labels the metrics; the client gets its status.
            let marker = Error::new(Kind::Invalid, status.message());
            return match upload.finish(Some(marker)).await {
                Err(e) => Err(Status::new(status.code(), e.message)),
                Ok(_) => Err(status),
            };
        }
        Ok(upload.finish(failure).await?)
    }
}

pub(super) fn table_name(name: &str) -> Result<TableName, Status> {
    name.parse::<TableName>()
        .map_err(|e| invalid(format!("table {name:?}: {e}")))
}
