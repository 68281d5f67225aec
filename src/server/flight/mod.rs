//! Arrow Flight SQL: queries, prepared statements, catalog browsing and
//! bulk ingest for BI tools and drivers (ADBC, JDBC, ODBC).
//!
//! The service is arrow-flight's
//! [`FlightSqlService`](arrow_flight::sql::server::FlightSqlService) on tonic, in the
//! same process as HTTP and over the same [`Database`]: the same tokens
//! and tenants ([`super::http::principal_of`]), the same sessions and
//! query limits, the same WAL path for ingest.
//!
//! Tickets carry the statement, sealed with an HMAC under a key made at
//! start-up, and the tenant they were issued to: a ticket cannot be
//! altered, and it runs only for a caller of that tenant, in the caller's
//! own session.
//!
//! # Layout
//!
//! - this file: the service's state, errors as gRPC statuses, callers.
//! - [`service`]: the Flight SQL calls, one method each.
//! - [`queries`]: planning a statement for a FlightInfo or a prepared
//!   statement, under the same limits as a query, and its ticket
//!   ([`tickets`]).
//! - [`prepared`]: prepared statements and their parameters, bounded per
//!   tenant in count and bytes.
//! - [`results`]: result streams and the types drivers read.
//! - [`ingest`]: bulk ingest through the WAL.
//! - [`facts`]: what the server reports about itself (SQL and type info).

mod facts;
mod ingest;
mod prepared;
mod queries;
mod results;
mod service;
mod tickets;

use super::error::ApiError;
use super::http::{principal_of, rate_check, record_refusal};
use crate::auth::{Principal, Role, Verifier};
use crate::db::{self, Database};
use crate::ids::TenantId;
use crate::ratelimit::{Kind, RateLimits};
use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::ProstMessageExt;
use arrow_flight::{FlightDescriptor, FlightInfo, HandshakeRequest, Ticket};
use axum::http::StatusCode;
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
    db: Arc<Database>,
    verifier: Option<Arc<Verifier>>,
    rate_limits: Arc<RateLimits>,
    tickets: TicketKey,
    prepared: PreparedStatements,
    /// The ingest memory budget, shared with HTTP ingest: an upload holds
    /// its batches in flight within it.
    ingest_budget: Arc<crate::ingest::budget::IngestBudget>,
}

impl FlightSql {
    pub fn new(
        db: Arc<Database>,
        verifier: Option<Arc<Verifier>>,
        rate_limits: Arc<RateLimits>,
        ingest_budget: Arc<crate::ingest::budget::IngestBudget>,
    ) -> Result<Self, String> {
        let prepared = PreparedStatements::new(db.config().max_prepared_bytes);
        Ok(FlightSql {
            inner: Arc::new(Inner {
                db,
                verifier,
                rate_limits,
                tickets: TicketKey::generate()?,
                prepared,
                ingest_budget,
            }),
        })
    }
}

// ---------------------------------------------------------------------------
// Errors

/// The gRPC status for an error the HTTP API would answer with `e.status`.
impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match e.status {
            StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::CONFLICT => Code::AlreadyExists,
            StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INSUFFICIENT_STORAGE => Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
            _ => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(message = %e.message, "flight request failed");
        }
        let mut status = Status::new(code, e.message);
        if let Some(secs) = e.retry_after {
            status
                .metadata_mut()
                .insert("retry-after", MetadataValue::from(secs));
        }
        status
    }
}

fn df_status(e: datafusion::error::DataFusionError) -> Status {
    Status::from(ApiError::from(e))
}

fn db_status(e: db::Error) -> Status {
    Status::from(ApiError::from(e))
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

// ---------------------------------------------------------------------------
// Authentication

impl FlightSql {
    /// The caller of a request: its bearer token (and tenant header), as
    /// over HTTP. Refusals are counted and audited like HTTP ones.
    fn caller<T>(&self, request: &Request<T>, method: &str) -> Result<Principal, Status> {
        let headers = request.metadata().clone().into_headers();
        principal_of(self.inner.verifier.as_deref(), &headers).map_err(|e| {
            record_refusal(&self.inner.db, &e, format!("flight {method}"), None);
            Status::from(e)
        })
    }

    fn rate_check(&self, tenant: &TenantId, kind: Kind, n: u32) -> Result<(), ApiError> {
        rate_check(&self.inner.rate_limits, tenant, kind, n)
    }
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
        .map_err(|e| Status::from(ApiError::from(e)))
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
