//! The one error of the service and its one classification. Every refusal
//! and failure of every layer below becomes an [`Error`] of a [`Kind`]
//! here, by type; the transports map the kind to their own codes (HTTP
//! statuses in one place, gRPC codes in another), neither derived from the
//! other.

use crate::db::maintenance::MaintenanceError;
use crate::ingest::budget::BudgetError;
use crate::query::limits::{LimitError, SERVER_MEMORY_BUSY, limit_error};
use crate::{auth, db, ingest};
use datafusion::error::DataFusionError;
use std::fmt;

/// What went wrong, as a client must act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request is wrong: bad input, bad SQL, an unknown column.
    Invalid,
    /// The content type is not one the call takes.
    UnsupportedMediaType,
    /// The request is larger than a limit allows, whatever the load.
    TooLarge,
    /// No usable credentials.
    Unauthenticated,
    /// Valid credentials without the right.
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// The request conflicts with work in progress.
    Conflict,
    /// The tenant is over its rate or concurrency: retry later.
    Overloaded,
    /// The request ran past its time limit.
    Timeout,
    /// The server cannot take the request now (full buffers, shutting down,
    /// memory in use by others): retry later.
    Unavailable,
    /// The disk is full: nothing was stored.
    StorageFull,
    /// A fault of the server's own.
    Internal,
}

impl Kind {
    /// Whether the caller caused it (a refusal), rather than the server.
    pub fn is_refusal(self) -> bool {
        !matches!(
            self,
            Kind::Internal | Kind::Unavailable | Kind::StorageFull | Kind::Timeout
        )
    }

    /// The metrics outcome label of a request that ended so.
    pub fn outcome(self) -> &'static str {
        match self {
            Kind::Internal | Kind::Unavailable | Kind::StorageFull => "error",
            _ => "rejected",
        }
    }
}

/// An error answered to a client, with what it may do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
    /// Facts a client acts on, by name (for a conflict: the entity, the
    /// expected and the current version).
    pub details: Option<serde_json::Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retry_after: None,
            details: None,
        }
    }

    /// A bad request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, message)
    }

    /// A refused request body's error, naming the event at fault (its
    /// index in the request) in the details when there is one.
    pub fn invalid_ingest(e: ingest::Error) -> Self {
        let error = Self::invalid(e.to_string());
        match e {
            ingest::Error::InvalidEvent { index, .. } => {
                error.with_details(serde_json::json!({ "event": index }))
            }
            _ => error,
        }
    }

    /// A fault of the server's own.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }

    /// With facts for the client.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// With a retry hint of `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<db::Error> for Error {
    fn from(e: db::Error) -> Self {
        let e = match e {
            db::Error::Query(q) => return q.into(),
            db::Error::Ingest(ingest::Error::Budget(b)) => return b.into(),
            db::Error::Ingest(e @ ingest::Error::InvalidEvent { .. }) => {
                return Error::invalid_ingest(e);
            }
            e => e,
        };
        let kind = match &e {
            db::Error::Ingest(ingest::Error::TooLarge(_)) => Kind::TooLarge,
            db::Error::Ingest(_) | db::Error::Name(_) | db::Error::VersionUnavailable(_) => {
                Kind::Invalid
            }
            db::Error::Conflict(c) => {
                let details = serde_json::json!({
                    "entity_id": c.entity,
                    "expected_version": match c.expected {
                        ingest::ExpectedVersion::Exactly(v) => serde_json::json!(v),
                        other => serde_json::json!(other.to_string()),
                    },
                    "current_version": c.current,
                });
                return Error::new(Kind::Conflict, e.to_string()).with_details(details);
            }
            db::Error::Rejected(v) => {
                let details = serde_json::to_value(v).unwrap_or_default();
                return Error::invalid(e.to_string()).with_details(details);
            }
            db::Error::BufferFull { .. } | db::Error::ShuttingDown => {
                return Error::new(Kind::Unavailable, e.to_string()).retry_after(1);
            }
            db::Error::Wal(crate::wal::Error::WriteRefused { source, .. }) => {
                // Nothing was stored and the log is intact: the client may
                // retry. A full disk is its own kind, so operators see it.
                let kind = match source.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        Kind::StorageFull
                    }
                    _ => Kind::Unavailable,
                };
                return Error::new(kind, e.to_string()).retry_after(5);
            }
            db::Error::Query(_)
            | db::Error::Wal(_)
            | db::Error::Storage(_)
            | db::Error::Internal(_) => Kind::Internal,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<auth::AuthError> for Error {
    fn from(e: auth::AuthError) -> Self {
        match e {
            auth::AuthError::Unauthenticated(m) => Error::new(Kind::Unauthenticated, m),
            auth::AuthError::Forbidden(m) => Error::new(Kind::Forbidden, m),
        }
    }
}

impl From<&LimitError> for Error {
    fn from(e: &LimitError) -> Self {
        match e {
            LimitError::Busy { .. } => Error::new(Kind::Overloaded, e.to_string()).retry_after(1),
            LimitError::Timeout(_) => Error::new(Kind::Timeout, e.to_string()),
        }
    }
}

impl From<BudgetError> for Error {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::TooLarge { .. } => Error::new(Kind::TooLarge, e.to_string()),
            BudgetError::Busy { .. } => Error::new(Kind::Unavailable, e.to_string()).retry_after(1),
        }
    }
}

impl From<crate::ratelimit::Limited> for Error {
    fn from(l: crate::ratelimit::Limited) -> Self {
        match l.retry_after {
            Some(wait) => Error::new(Kind::Overloaded, l.message)
                .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64),
            None => Error::new(Kind::TooLarge, l.message),
        }
    }
}

impl From<MaintenanceError> for Error {
    fn from(e: MaintenanceError) -> Self {
        match e {
            MaintenanceError::Busy(_) => Error::new(Kind::Conflict, e.to_string()),
            MaintenanceError::NoTable(_) => Error::new(Kind::NotFound, e.to_string()),
            MaintenanceError::Db(e) => e.into(),
        }
    }
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        if let Some(limit) = limit_error(&e) {
            return limit.into();
        }
        if let Some(refusal) = crate::query::read_only_refusal(&e) {
            return Error::invalid(refusal.to_string());
        }
        if let Some(denied) = crate::query::policy::policy_denied(&e) {
            return Error::new(Kind::Forbidden, denied.to_string());
        }
        if let DataFusionError::ResourcesExhausted(m) = e.find_root()
            && m.contains(SERVER_MEMORY_BUSY)
        {
            return Error::new(Kind::Unavailable, format!("resources exhausted: {m}"))
                .retry_after(1);
        }
        let kind = if is_user_error(&e) {
            Kind::Invalid
        } else {
            Kind::Internal
        };
        Error::new(kind, e.strip_backtrace().to_string())
    }
}

impl From<crate::dsl::QueryError> for Error {
    fn from(e: crate::dsl::QueryError) -> Self {
        match e {
            crate::dsl::QueryError::Dsl(e) => Error::invalid(e.to_string()),
            crate::dsl::QueryError::Engine(e) => e.into(),
        }
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
        DataFusionError::External(inner) => {
            if inner.is::<crate::query::ReadOnlyRefusal>()
                || inner.is::<crate::query::policy::PolicyDenied>()
            {
                return true;
            }
            match inner.downcast_ref::<DataFusionError>() {
                Some(df) => is_user_error(df),
                None => false,
            }
        }
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

#[cfg(test)]
#[path = "error_tests.rs"]
mod tests;
