//! Arrow Flight SQL: queries, prepared statements, catalog browsing and
//! bulk ingest for BI tools and drivers (ADBC, JDBC, ODBC).
//!
//! The service is arrow-flight's
//! [`FlightSqlService`](arrow_flight::sql::server::FlightSqlService) on tonic, in the
//! same process as HTTP and over the same [`Service`]: the same tokens
//! and tenants, the same sessions and query limits, the same WAL path for
//! ingest. The service's errors become gRPC statuses here, by kind.
//!
//! Tickets carry the statement, sealed with an HMAC under a key made at
//! start-up, and the tenant they were issued to: a ticket cannot be
//! altered, and it runs only for a caller of that tenant, in the caller's
//! own session.
//!
//! # Layout
//!
//! - this file: the service's state, errors as gRPC statuses, callers.
//! - [`calls`]: the Flight SQL calls, one method each.
//! - [`queries`]: planning a statement for a FlightInfo or a prepared
//!   statement, under the same limits as a query, and its ticket
//!   ([`tickets`]).
//! - [`prepared`]: prepared statements and their parameters, bounded per
//!   tenant in count and bytes.
//! - [`results`]: result streams and the types drivers read.
//! - [`ingest`]: bulk ingest through the WAL.
//! - [`facts`]: what the server reports about itself (SQL and type info).

mod calls;
mod facts;
mod ingest;
mod prepared;
mod queries;
mod results;
mod tickets;

use crate::auth::{Principal, Role};
use crate::service::caller::RequestInfo;
use crate::service::{self, Service};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::ProstMessageExt;
use arrow_flight::{FlightDescriptor, FlightInfo, HandshakeRequest, Ticket};
use base64::Engine;
use prepared::PreparedStatements;
use prost::Message;
use results::{DoGetResult, flight_info, one_batch};
use std::sync::Arc;
use tickets::TicketKey;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

/// Largest gRPC message the service decodes: one record batch of a DoPut.
pub fn service(flight: FlightSql, max_message_bytes: usize) -> FlightServiceServer<FlightSql> {
    FlightServiceServer::new(flight)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(usize::MAX)
}

/// The Flight SQL service.
#[derive(Debug, Clone)]
pub struct FlightSql {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    service: Arc<Service>,
    tickets: TicketKey,
    prepared: PreparedStatements,
}

impl FlightSql {
    pub fn new(service: Arc<Service>) -> Result<Self, String> {
        let prepared = PreparedStatements::new(service.config().max_prepared_bytes);
        Ok(FlightSql {
            inner: Arc::new(Inner {
                service,
                tickets: TicketKey::generate()?,
                prepared,
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Errors

/// The gRPC code of an error of `kind`.
pub fn code(kind: service::Kind) -> Code {
    use service::Kind;
    match kind {
        Kind::Invalid | Kind::UnsupportedMediaType => Code::InvalidArgument,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::Forbidden => Code::PermissionDenied,
        Kind::NotFound => Code::NotFound,
        Kind::Conflict => Code::Aborted,
        Kind::Timeout => Code::DeadlineExceeded,
        Kind::TooLarge | Kind::Overloaded | Kind::StorageFull => Code::ResourceExhausted,
        Kind::Unavailable => Code::Unavailable,
        Kind::Internal => Code::Internal,
    }
}

/// The status of a service error, with `retry-after` metadata when a
/// retry may succeed and the error's details as JSON.
impl From<service::Error> for Status {
    fn from(e: service::Error) -> Status {
        let code = code(e.kind);
        if code == Code::Internal {
            tracing::error!(message = %e.message, "flight request failed");
        }
        // Details (the event at fault, the rules broken) travel as JSON
        // in the status's details, as HTTP sends them in its body.
        let mut status = match &e.details {
            Some(details) => Status::with_details(code, e.message, details.to_string().into()),
            None => Status::new(code, e.message),
        };
        if let Some(secs) = e.retry_after {
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(secs));
        }
        status
    }
}

fn df_status(e: datafusion::error::DataFusionError) -> Status {
    Status::from(service::Error::from(e))
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

// ---------------------------------------------------------------------------
// Authentication

impl FlightSql {
    /// The caller of a request: its bearer token (and tenant header), as
    /// over HTTP, through the same service call.
    fn caller<T>(&self, request: &Request<T>, method: &str) -> Result<Principal, Status> {
        let headers = request.metadata().clone().into_headers();
        let info = RequestInfo {
            action: format!("flight {method}"),
            request_id: None,
        };
        Ok(self
            .inner
            .service
            .authenticate(super::http::credentials(&headers), info)?)
    }

    fn service(&self) -> &Service {
        &self.inner.service
    }
}

/// Whether the request asks to read events as written, without schema
/// migrations (metadata `x-allsource-raw: true`).
pub(super) fn raw_of<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get("x-allsource-raw")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl FlightSql {
    /// A caller of the catalog calls (every role may browse).
    fn browser<T>(&self, request: &Request<T>, method: &str) -> Result<Principal, Status> {
        let caller = self.caller(request, method)?;
        require(&caller, Role::Reader, "browse")?;
        Ok(caller)
    }

    /// The FlightInfo of a catalog call; its ticket is the command itself.
    fn browse_info(
        &self,
        command: impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.browser(&request, "GetFlightInfo")?;
        flight_info(
            schema,
            command.as_any().encode_to_vec().into(),
            request.into_inner(),
        )
    }

    /// The (empty) answer to the key calls: event tables have no keys.
    fn no_keys(&self, request: &Request<Ticket>, schema: Schema) -> DoGetResult {
        self.browser(request, "DoGet")?;
        Ok(Response::new(one_batch(RecordBatch::new_empty(Arc::new(
            schema,
        )))))
    }
}

fn require(caller: &Principal, role: Role, action: &str) -> Result<(), Status> {
    caller
        .require(role, action)
        .map_err(|e| Status::from(service::Error::from(e)))
}

/// The token in a handshake: `Authorization: Basic` with the token as the
/// password (any user name), or `Authorization: Bearer`.
fn handshake_token(request: &Request<Streaming<HandshakeRequest>>) -> Result<String, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(String::new());
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return Ok(token.trim().to_string());
    }
    let basic = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| {
            Status::unauthenticated(
                "send Authorization: Basic (any user, the token as password) or Bearer <token>",
            )
        })?;
    // Clients differ on padding; accept either.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = lenient
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Status::unauthenticated("the Basic credentials are not valid base64 text")
        })?;
    let (_user, password) = decoded
        .split_once(':')
        .ok_or_else(|| Status::unauthenticated("the Basic credentials have no password"))?;
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Error, Kind};

    #[test]
    fn every_kind_has_its_grpc_code() {
        let cases = [
            (Kind::Invalid, Code::InvalidArgument),
            (Kind::UnsupportedMediaType, Code::InvalidArgument),
            (Kind::TooLarge, Code::ResourceExhausted),
            (Kind::Unauthenticated, Code::Unauthenticated),
            (Kind::Forbidden, Code::PermissionDenied),
            (Kind::NotFound, Code::NotFound),
            (Kind::Conflict, Code::Aborted),
            (Kind::Overloaded, Code::ResourceExhausted),
            (Kind::Timeout, Code::DeadlineExceeded),
            (Kind::Unavailable, Code::Unavailable),
            (Kind::StorageFull, Code::ResourceExhausted),
            (Kind::Internal, Code::Internal),
        ];
        for (kind, code) in cases {
            let status = Status::from(Error::new(kind, "m").retry_after(2));
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), "m");
            assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        }
    }
}
