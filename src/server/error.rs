//! The one place where the service's errors become HTTP statuses.

use crate::service::{Error, Kind};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The HTTP status of an error of `kind`.
pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        Kind::Timeout => StatusCode::REQUEST_TIMEOUT,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Answers `{"error": "..."}` with the kind's status, `Retry-After` when
/// a retry may succeed and `WWW-Authenticate` when credentials are
/// missing or wrong.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(self.kind);
        // A 503 is backpressure (the buffer or a queue is full) or a
        // failure already logged where it happened: one line per refused
        // request would flood the log under load, so it is debug only.
        // The metrics count every refusal.
        match self.kind {
            Kind::Unavailable => {
                tracing::debug!(%status, message = %self.message, "request refused")
            }
            _ if status.is_server_error() => {
                tracing::error!(%status, message = %self.message, "request failed")
            }
            _ => {}
        }
        let body = match self.details {
            Some(details) => serde_json::json!({ "error": self.message, "details": details }),
            None => serde_json::json!({ "error": self.message }),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if self.kind == Kind::Unauthenticated {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_and_headers() {
        let cases = [
            (Kind::Invalid, 400),
            (Kind::UnsupportedMediaType, 415),
            (Kind::TooLarge, 413),
            (Kind::Unauthenticated, 401),
            (Kind::Forbidden, 403),
            (Kind::NotFound, 404),
            (Kind::Conflict, 409),
            (Kind::Overloaded, 429),
            (Kind::Timeout, 408),
            (Kind::Unavailable, 503),
            (Kind::StorageFull, 507),
            (Kind::Internal, 500),
        ];
        for (kind, code) in cases {
            let resp = Error::new(kind, "m").retry_after(3).into_response();
            assert_eq!(resp.status().as_u16(), code, "{kind:?}");
            assert_eq!(resp.headers()[header::RETRY_AFTER], "3", "{kind:?}");
            assert_eq!(
                resp.headers().contains_key(header::WWW_AUTHENTICATE),
                kind == Kind::Unauthenticated,
                "{kind:?}"
            );
        }
    }
}
