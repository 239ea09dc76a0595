//! API errors: a status code and a message, answered as JSON.

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
        sqlvigil_core::Error::from(e).into()
    }
}

impl From<sqlvigil_analytics::AnalyticsError> for ApiError {
    fn from(e: sqlvigil_analytics::AnalyticsError) -> Self {
        sqlvigil_core::Error::from(e).into()
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
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
            Json(serde_json::json!({ "error": self.to_string() })),
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
