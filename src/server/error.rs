//! The one place where errors become HTTP status codes.

use crate::query::limits::{LimitError, SERVER_MEMORY_BUSY, limit_error};
use crate::{db, ingest};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

/// An error answered to an HTTP client as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a Retry-After header (503, 429).
    pub retry_after: Option<u64>,
    /// Sends `WWW-Authenticate: Bearer` (401).
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            challenge: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, message = %self.message, "request failed");
        }
        let body = serde_json::json!({ "error": self.message });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"allsource\""),
            );
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<db::Error> for ApiError {
    fn from(e: db::Error) -> Self {
        let status = match &e {
            db::Error::Ingest(ingest::Error::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            db::Error::Ingest(_) | db::Error::Name(_) => StatusCode::BAD_REQUEST,
            db::Error::BufferFull { .. } | db::Error::ShuttingDown => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                err.retry_after = Some(1);
                return err;
            }
            db::Error::Wal(crate::wal::Error::WriteRefused { source, .. }) => {
                // Nothing was stored and the log is intact: the client may
                // retry. A full disk is 507, so operators see the cause.
                let status = match source.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        StatusCode::INSUFFICIENT_STORAGE
                    }
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                let mut err = ApiError::new(status, e.to_string());
                err.retry_after = Some(5);
                return err;
            }
            db::Error::Wal(_)
            | db::Error::Storage(_)
            | db::Error::Internal(_)
            | db::Error::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Whether a DataFusion error is the user's mistake (bad SQL, unknown
/// column, a cast that fails on their data) rather than ours.
pub fn is_user_error(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ParquetError(e) => is_filter_failure(e),
        DataFusionError::Internal(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_)
        | DataFusionError::Substrait(_) => false,
        DataFusionError::Context(_, inner) => is_user_error(inner),
        DataFusionError::Diagnostic(_, inner) => is_user_error(inner),
        DataFusionError::Shared(inner) => is_user_error(inner),
        DataFusionError::External(inner) => match inner.downcast_ref::<DataFusionError>() {
            Some(df) => is_user_error(df),
            None => false,
        },
        _ => true,
    }
}

/// Whether a Parquet error is the query's own filter failing on a row
/// (a division by zero, a failed cast): scans that filter rows as they
/// decode them (under a TopK) evaluate the filter inside the Parquet
/// reader, which passes the engine's error on as text in a Parquet error.
/// The same filter evaluated above the scan is the user's error, and so
/// is this one, unless the engine's error was internal.
fn is_filter_failure(e: &parquet::errors::ParquetError) -> bool {
    const PREFIX: &str = "Error evaluating filter predicate: ";
    let parquet::errors::ParquetError::External(inner) = e else {
        return false;
    };
    match inner.downcast_ref::<arrow::error::ArrowError>() {
        Some(arrow::error::ArrowError::ComputeError(message)) => message
            .strip_prefix(PREFIX)
            .is_some_and(|engine| !engine.starts_with("Internal(")),
        _ => false,
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Unauthenticated(m) => {
                let mut e = ApiError::new(StatusCode::UNAUTHORIZED, m);
                e.challenge = true;
                e
            }
            crate::auth::AuthError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        }
    }
}

/// The refusal for a query stopped by one of the query limits.
fn limit_refusal(e: &LimitError) -> ApiError {
    match e {
        LimitError::Busy { .. } => {
            let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string());
            err.retry_after = Some(1);
            err
        }
        LimitError::Timeout(_) => ApiError::new(StatusCode::REQUEST_TIMEOUT, e.to_string()),
    }
}

impl From<DataFusionError> for ApiError {
    fn from(e: DataFusionError) -> Self {
        if let Some(limit) = limit_error(&e) {
            return limit_refusal(limit);
        }
        if let DataFusionError::ResourcesExhausted(m) = e.find_root()
            && m.contains(SERVER_MEMORY_BUSY)
        {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("resources exhausted: {m}"),
            );
            err.retry_after = Some(1);
            return err;
        }
        let user = is_user_error(&e);
        let message = e.strip_backtrace().to_string();
        if user {
            ApiError::bad_request(message)
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
        }
    }
}

impl From<crate::dsl::QueryError> for ApiError {
    fn from(e: crate::dsl::QueryError) -> Self {
        match e {
            crate::dsl::QueryError::Dsl(e) => ApiError::bad_request(e.to_string()),
            crate::dsl::QueryError::Engine(e) => e.into(),
        }
    }
}
