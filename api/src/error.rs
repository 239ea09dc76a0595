//! API errors: a status code and a message, answered as JSON
//! `{"error": {"code", "message", "request_id"}}`, the request id being the one in the
//! request's and the response's `x-request-id` header (and in the log lines of the
//! request, see [`request_scope`]).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// What was asked contradicts what is recorded (acknowledging a resolved anomaly).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotImplemented(String),
    /// Asked too often: try again after `retry_after_secs` (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// A backend (Elasticsearch) is unreachable or overloaded: try again later.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// By kind: what the backend cannot answer is 501, a backend away or overloaded 503,
/// anything else 500 (logged).
impl From<sqlvigil_core::Error> for ApiError {
    fn from(e: sqlvigil_core::Error) -> Self {
        use sqlvigil_core::Error as E;
        match e {
            E::Unsupported(m) => ApiError::NotImplemented(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::RateLimited { what, retry_after } => ApiError::TooManyRequests {
                message: what,
                // Round up: a client retrying after the header's whole seconds is let in.
                retry_after_secs: retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
            },
            e if e.is_retryable() => {
                tracing::warn!("API request failed: {e}");
                ApiError::Unavailable(e.to_string())
            }
            e => {
                tracing::error!("API request failed: {e}");
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<sqlvigil_store::StoreError> for ApiError {
    fn from(e: sqlvigil_store::StoreError) -> Self {
        match e {
            sqlvigil_store::StoreError::Conflict(m) => ApiError::Conflict(m),
            e => sqlvigil_core::Error::from(e).into(),
        }
    }
}

impl From<sqlvigil_analytics::AnalyticsError> for ApiError {
    fn from(e: sqlvigil_analytics::AnalyticsError) -> Self {
        sqlvigil_core::Error::from(e).into()
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Run the rest of the request with its id (`x-request-id`, set by tower-http's
/// `SetRequestIdLayer` when the client sent none) in its log lines and its errors.
pub(crate) async fn request_scope(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let span = tracing::info_span!("request", request_id = %id);
    REQUEST_ID.scope(id, next.run(req).instrument(span)).await
}

impl ApiError {
    /// A stable name for the kind of error, for clients to branch on.
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": {
                "code": self.code(),
                "message": self.to_string(),
                "request_id": REQUEST_ID.try_with(String::clone).ok(),
            } })),
        )
            .into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(*retry_after_secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}
