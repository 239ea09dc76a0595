//! The analytics crate's one error: what asking an LLM, validating its answer, or
//! reading the context and persisting the insight can go wrong with. LLM failures make
//! the analyzer fall back to the rules analyzer (recorded as an analysis failure); the
//! rest reach the caller.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("llm config: {0}")]
    Config(String),
    /// Could not connect, or the connection broke (retried).
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The server answered with an error status (5xx is retried, 4xx is not).
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// The server's reply did not have the API's shape.
    #[error("unexpected reply from {url}: {message}")]
    Protocol { url: String, message: String },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading the context or persisting and publishing the insight failed.
    #[error("{0}")]
    Pipeline(#[from] sqlvigil_core::Error),
}

impl AnalyticsError {
    /// Whether another attempt may succeed (connection errors, timeouts, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            AnalyticsError::Unreachable { .. } | AnalyticsError::Timeout { .. } => true,
            AnalyticsError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// Keeps its kind: a pipeline error as it was, an LLM server away or timing out as
/// retryable, a bad LLM setting as config.
impl From<AnalyticsError> for sqlvigil_core::Error {
    fn from(e: AnalyticsError) -> Self {
        use sqlvigil_core::Error;
        match e {
            AnalyticsError::Pipeline(e) => e,
            AnalyticsError::Config(m) => Error::Config(m),
            e if e.is_retryable() => Error::Unavailable(format!("analysis: {e}")),
            e => Error::failed("analysis", e),
        }
    }
}
